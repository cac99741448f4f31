"""The drain: claim -> send -> write back, pipelined, until nothing is claimable or time is up."""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from outbox.relay.claim import claim_batch
from outbox.relay.rows import ClaimedRow, DrainResult
from outbox.relay.send import acknowledged as _acknowledged, send as _send
from outbox.relay.sqlite_lock import single_relay_on_sqlite as _single_relay_on_sqlite
from outbox.relay.write_back import write_back as _write_back

logger = logging.getLogger("outbox.relay")


def relay_drain(*, batch_size: int | None = None, time_budget_s: float = 10.0,
                max_batches: int | None = None) -> DrainResult:
    """Publish due outbox rows until none is claimable or the time budget is spent.

    Pipelined: batch N+1 is claimed and handed to the producer while the broker still works on
    batch N, then N is written back. The producer keeps the order of what it was handed, so a
    key may have rows in two consecutive batches; a key whose row failed in N has its rows in
    N+1 released unmarked (`blocked_keys`), to be sent again after the failed row.
    """
    result = DrainResult()
    started = time.monotonic()
    limit = batch_size or settings.OUTBOX_BATCH_SIZE
    with _single_relay_on_sqlite() as may_run:
        if not may_run:
            return result
        blocked_keys: set[str] = set()
        claiming = True

        def claim_next(in_flight: uuid.UUID | None) -> tuple[uuid.UUID, list[ClaimedRow]]:
            nonlocal claiming
            if claiming and (time.monotonic() - started >= time_budget_s
                             or (max_batches is not None and result.batches >= max_batches)):
                claiming = False
            token = uuid.uuid4()
            rows = claim_batch(token=token, limit=limit, in_flight=in_flight) if claiming else []
            if rows:
                result.batches += 1
            else:
                claiming = False
            return token, rows

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-send") as sender:
            token, rows = claim_next(None)
            sending = sender.submit(_send, token, rows) if rows else None
            while sending is not None:
                # The database work of this step (claim the next batch, write back the batch
                # being acknowledged) runs while the sender thread hands the batch to the
                # producer: the two overlap.
                next_token, next_rows = claim_next(token)
                sent = sending.result()
                if sent.outcomes:
                    claiming = False  # the producer refused rows: no more until backoff
                sending = sender.submit(_send, next_token, next_rows) if next_rows else None
                token = next_token
                outcomes = _acknowledged(sent, flush=sending is None)
                if settings.OUTBOX_FAULT_PAUSE_AFTER_SEND:
                    # Fault tests kill the relay here: sent and acknowledged, not yet marked.
                    logger.warning("paused after send", extra={"rows": len(sent.rows)})
                    time.sleep(settings.OUTBOX_FAULT_PAUSE_AFTER_SEND)
                _write_back(token=sent.token, rows=sent.rows, outcomes=outcomes,
                            result=result, blocked_keys=blocked_keys)
                if result.failed or result.dead:
                    claiming = False  # let backoff work instead of spinning on a failing broker
    result.seconds = time.monotonic() - started
    if result.batches:
        level = logging.WARNING if result.failed or result.dead else logging.INFO
        logger.log(level, "outbox drain", extra={**result.as_dict(),
                                                 "last_error": result.errors[-1] if result.errors else None})
    return result
