"""The drain: claim -> send -> write back, pipelined, until nothing is claimable or time is up."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from django import db
from django.conf import settings

from outbox.kafka import producer_name, producer_name_set
from outbox.relay.claim import claim_batch, claim_quick
from outbox.relay.reconnect import Retry, new_session, retry_for
from outbox.relay.rows import ClaimedRow, DrainResult, NotSent
from outbox.relay.send import SentBatch, acknowledged as _acknowledged, send as _send
from outbox.relay.sqlite_lock import single_relay_on_sqlite as _single_relay_on_sqlite
from outbox.relay.stopping import relay_stop_requested
from outbox.relay.write_back import (
    hand_back_abandoned as _hand_back_abandoned,
    release_unseen_claim as _release_unseen_claim,
    write_back as _write_back,
)

logger = logging.getLogger("outbox.relay")

# A batch this small is handed to the producer by the drain's own thread: what just committed
# reaches the producer without a hop to the sender thread (a wake-up's batch is a few rows).
# Larger ones go to the sender thread, so their send overlaps the next claim.
INLINE_SEND_MAX_ROWS = 32


def relay_drain(
    *,
    batch_size: int | None = None,
    time_budget_s: float = 10.0,
    max_batches: int | None = None,
    quick_claims: bool = False,
    min_age_s: float = 0.0,
    quick_from_seq: int | None = None,
) -> DrainResult:
    """Publish due outbox rows until none is claimable or the time budget is spent (`_drain`).

    `quick_claims` (the relay loop, woken by a commit): the claims are `claim_quick`, one
    statement each, so what just committed goes to the producer one round trip after the
    wake-up; once one comes back full (a backlog) the drain goes on with `claim_batch` and its
    fair shares. Rows `claim_quick` never takes (abandoned ones) wait for a drain without it.

    `min_age_s`: claim only rows due for at least that long (the beat's safety-net drain beside
    a relay loop, outbox/tasks.py).

    `quick_from_seq`: the quick claims start at that seq, the lowest the wake-up's notifications
    name (`claim_quick`'s `from_seq`).

    Every drain, even one that found nothing or failed, sets the relay's heartbeat metric: the
    relay-down alert reads it.
    """
    # The metrics are imported on first use, not with the relay: a Celery worker imports its
    # tasks before it makes PROMETHEUS_MULTIPROC_DIR, where the metrics' files go once defined.
    from commerce.observability.metrics import relay_drain_observed

    try:
        return _drain(
            batch_size=batch_size,
            time_budget_s=time_budget_s,
            max_batches=max_batches,
            quick_claims=quick_claims,
            min_age_s=min_age_s,
            quick_from_seq=quick_from_seq,
        )
    finally:
        relay_drain_observed()


def _drain(
    *,
    batch_size: int | None,
    time_budget_s: float,
    max_batches: int | None,
    quick_claims: bool,
    min_age_s: float,
    quick_from_seq: int | None,
) -> DrainResult:
    """Publish due outbox rows until none is claimable or the time budget is spent.

    Pipelined: batch N+1 is claimed and handed to the producer while the broker still works on
    batch N, then N is written back. The producer keeps the order of what it was handed, so a
    key may have rows in two consecutive batches; a key whose row failed in N has its rows in
    N+1 released unmarked (`blocked_keys`), to be sent again after the failed row. A refused
    send, a failed acknowledgement, a batch's deadline or a stop of the process ends the drain:
    what was not sent is released at once (docs/OUTBOX.md). Rows of a missing topic do not end
    it: they fail into their backoff, their keys' later rows are not sent (`held_keys`), and the
    other topics' rows go on (outbox/relay/send.py, `MissingTopics`).
    """
    from commerce.observability.metrics import relay_batch_observed

    result = DrainResult()
    started = time.monotonic()
    limit = batch_size or settings.OUTBOX_BATCH_SIZE
    with _single_relay_on_sqlite() as may_run:
        if not may_run:
            return result
        blocked_keys: set[str] = set()
        held_keys: set[str] = set()  # keys with a row of a missing topic: not sent in this drain
        abort = threading.Event()
        claiming = True
        quick = quick_claims
        claimed_at: dict[uuid.UUID, float] = {}  # token -> when its claim began (batch duration)
        failed_claims: list[tuple[uuid.UUID, db.Error]] = []  # the database gave up on the claim
        lease_s = float(settings.OUTBOX_CLAIM_TTL)

        def lease_end(token: uuid.UUID) -> float:
            """Until when a lost session's write-back of the batch is worth doing again."""
            return claimed_at.get(token, time.monotonic()) + lease_s

        def claim_next(in_flight: uuid.UUID | None) -> tuple[uuid.UUID, list[ClaimedRow], float]:
            nonlocal claiming, quick
            if claiming and (
                time.monotonic() - started >= time_budget_s
                or relay_stop_requested()
                or (max_batches is not None and result.batches >= max_batches)
            ):
                claiming = False
            token = uuid.uuid4()
            claimed_at[token] = time.monotonic()
            # The batch's deadline: its acks are in by half its lease, which leaves the other
            # half for the write-back. A batch never outlives its lease.
            deadline = time.monotonic() + settings.OUTBOX_CLAIM_TTL / 2
            rows: list[ClaimedRow] = []
            try:
                if not claiming:
                    pass
                elif quick:
                    rows = claim_quick(token=token, limit=limit, in_flight=in_flight, from_seq=quick_from_seq)
                else:
                    rows = claim_batch(token=token, limit=limit, in_flight=in_flight, min_age_s=min_age_s)
            except db.Error as exc:
                retry = retry_for(exc)
                if retry is None:
                    raise
                # The database gave up on the claim (its session lost, a timeout): no more
                # claims in this drain; a batch in flight is still written back, on a new session.
                # (With none in flight the error is raised at the end, and its caller logs it.)
                if in_flight is not None:
                    logger.warning(
                        "outbox claim failed: no more claims in this drain, the batch in flight written back",
                        extra={"error": f"{type(exc).__name__}: {exc}"},
                    )
                failed_claims.append((token, exc))
                claiming = False
                if retry is Retry.NEW_SESSION:
                    new_session()
            if len(rows) >= limit:
                quick = False  # a backlog: from now on with the topics' fair shares
            if rows:
                result.batches += 1
            else:
                claiming = False
            return token, rows, deadline

        def release(token: uuid.UUID, rows: list[ClaimedRow], why: str) -> None:
            _write_back(
                token=token,
                rows=rows,
                outcomes={row.seq: NotSent(why) for row in rows},
                result=result,
                blocked_keys=blocked_keys,
                retry_until=lease_end(token),
            )

        # The sender thread sends with this drain's producer (the relay loop's full drains have
        # one of their own, outbox/kafka.py `producer_own`).
        with ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="outbox-send",
            initializer=producer_name_set,
            initargs=(producer_name(),),
        ) as sender:

            def hand_over(token: uuid.UUID, rows: list[ClaimedRow], deadline: float) -> Future[SentBatch] | None:
                if not rows:
                    return None
                if len(rows) > INLINE_SEND_MAX_ROWS:
                    return sender.submit(_send, token, rows, deadline=deadline, abort=abort, held_keys=held_keys)
                handed: Future[SentBatch] = Future()
                try:
                    handed.set_result(_send(token, rows, deadline=deadline, abort=abort, held_keys=held_keys))
                except Exception as exc:  # noqa: BLE001 - raised again by result(), as from the sender thread
                    handed.set_exception(exc)
                return handed

            token, rows, deadline = claim_next(None)
            sending = hand_over(token, rows, deadline)
            aborted = False
            while sending is not None:
                # The database work of this step (claim the next batch, write back the batch
                # being acknowledged) runs while the sender thread hands a large batch to the
                # producer (a small one is already handed over): the two overlap. Not while the
                # batch holds a row its last relay died holding: if sending it kills this relay
                # too, no other row is held.
                suspect = any(row.abandoned for row in rows)
                next_token, next_rows, next_deadline = (uuid.uuid4(), [], 0.0) if suspect else claim_next(token)
                sent = sending.result()
                not_to_send: list[ClaimedRow] = []
                if sent.stopped or abort.is_set():
                    # A refused row, the deadline or a stop: nothing more goes to the producer;
                    # the next batch is released once this one is written back.
                    claiming = False
                    not_to_send, next_rows = next_rows, []
                # A batch of a row its last relay died holding (claimed while this one was in
                # flight) waits for this one's write-back: if sending it kills this relay too,
                # no other batch is held.
                deferred = any(row.abandoned for row in next_rows)
                sending = None if deferred else hand_over(next_token, next_rows, next_deadline)
                outcomes, aborted_now = _acknowledged(sent, flush=sending is None, after_abort=aborted, abort=abort)
                aborted = aborted or aborted_now
                if settings.OUTBOX_FAULT_PAUSE_AFTER_SEND:
                    # Fault tests kill the relay here: sent and acknowledged, not yet marked.
                    logger.warning("paused after send", extra={"rows": len(sent.rows)})
                    time.sleep(settings.OUTBOX_FAULT_PAUSE_AFTER_SEND)
                _write_back(
                    token=sent.token,
                    rows=sent.rows,
                    outcomes=outcomes,
                    result=result,
                    blocked_keys=blocked_keys,
                    spans=sent.spans,
                    retry_until=lease_end(sent.token),
                )
                relay_batch_observed(
                    size=len(sent.rows), seconds=time.monotonic() - claimed_at.pop(sent.token, started)
                )
                if not_to_send:
                    release(next_token, not_to_send, sent.stopped or "an earlier batch failed")
                result.held += sent.held
                # Rows of a missing topic are in backoff now, not claimable: the drain goes on
                # with the other topics' rows. Any other failure ends it.
                if result.failed_not_held or result.dead or aborted:
                    claiming = False  # let backoff work instead of spinning on a failing broker
                if deferred:
                    if result.failed_not_held or result.dead or aborted:
                        # Not sent: the suspect row goes back as it was found (abandoned, its
                        # attempt not counted), to be taken alone again.
                        _hand_back_abandoned(
                            token=next_token,
                            rows=[row for row in next_rows if row.abandoned],
                            retry_until=lease_end(next_token),
                        )
                        others = [row for row in next_rows if not row.abandoned]
                        if others:
                            release(next_token, others, "an earlier batch failed")
                        next_rows = []
                    else:
                        sending = hand_over(next_token, next_rows, next_deadline)
                elif suspect and claiming and sending is None:
                    # The suspect batch is written back: claim the next one now, unpipelined.
                    next_token, next_rows, next_deadline = claim_next(None)
                    sending = hand_over(next_token, next_rows, next_deadline)
                token, rows = next_token, next_rows
        for failed_token, error in failed_claims:
            # The claim may have committed, its reply lost with the session: what it leased
            # is released, not left for the lease to run out. Done again until the lease ends
            # only if the database answered this drain's write-backs since.
            try:
                _release_unseen_claim(
                    token=failed_token, retry_until=lease_end(failed_token) if result.batches else None
                )
            except db.Error as exc:
                # The database is still away: the claim, if it committed, waits out its lease.
                logger.log(
                    logging.WARNING if result.batches else logging.DEBUG,
                    "a failed claim could not be released",
                    extra={"claim_token": str(failed_token), "error": f"{type(exc).__name__}: {exc}"},
                )
            if not result.batches:
                raise error  # nothing claimed: the database is away, the caller backs off
            result.errors.append(f"claim: {type(error).__name__}: {error}"[:2000])
    result.seconds = time.monotonic() - started
    if result.batches:
        level = logging.WARNING if result.failed or result.dead else logging.INFO
        logger.log(
            level,
            "outbox drain",
            extra={**result.as_dict(), "last_error": result.errors[-1] if result.errors else None},
        )
    return result
