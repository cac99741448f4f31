"""The relay loop: a long-running relay that drains the moment a row commits (PostgreSQL).

The recording transaction sends `NOTIFY outbox_wakeup` (outbox/recording.py); PostgreSQL delivers
it at commit to every session that `LISTEN`s. The loop holds one such session of its own
(psycopg 3, autocommit, apart from Django's connection that the drain uses) and:

- drains at once when a notification arrives: no debounce, the first event after idle is claimed
  as soon as it is heard, with one-statement claims (`claim_quick`, claim.py) that start at the
  lowest seq the notifications name;
- coalesces: notifications that arrive while a drain runs are all read after it, and cause one
  more drain (their rows may have come after the drain's last claim), not one per notification;
- runs full drains on a thread of their own (`_FullDrains`), every OUTBOX_LOOP_POLL_INTERVAL and
  at once at start, after a poll timeout or a reconnection: a notification sent while no loop
  listened, a row whose backoff ran out, an abandoned row is published by one of them, and no
  notification waits for one; the Celery beat drain remains the last safety net;
- makes its producers at start and reads its topics' metadata (`producer_warm`): the first event
  heard does not wait for them;
- stops gracefully on `relay_stop_request()` (SIGTERM in `manage.py relay_loop`): the running
  drain writes back what was acknowledged and releases the rest of its claims (stopping.py).

Several loops (and Celery drains) may run side by side: every drain claims with
`FOR UPDATE SKIP LOCKED` and the per-key check (claim.py), so a row is leased by one relay at a
time and a key's rows go out in order whoever holds them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, connections

from commerce.gc_freeze import startup_objects_frozen
from outbox.kafka import producer_close, producer_own, producer_warm
from outbox.relay.drain import relay_drain
from outbox.relay.stopping import relay_stop_requested
from outbox.wakeup import CHANNEL

logger = logging.getLogger("outbox.relay.loop")

RECONNECT_MAX_S = 5.0
DRAIN_BUDGET_S = 10.0
FULL_DRAIN_PRODUCER = "relay-loop-full-drain"


@dataclass
class LoopStats:
    """What a loop did, for its last log line and for tests."""

    drains: int = 0
    published: int = 0
    notifications: int = 0
    polls: int = 0
    database_errors: int = 0


class Waker:
    """A self-pipe: `wake()` (safe in a signal handler) interrupts the loop's wait at once."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def wake(self) -> None:
        # The pipe is full or closed: the loop is already awake or gone.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.write_fd, b"x")

    def clear(self) -> None:
        try:
            while os.read(self.read_fd, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _listen_connect(using: str) -> psycopg.Connection:
    """A session of its own that LISTENs: the drain's Django connection opens and closes
    transactions, this one only waits. It connects as Django does (`OPTIONS` included: sslmode,
    certificates, target_session_attrs)."""
    params = connections[using].get_connection_params()
    # Django's cursor class and adapters: this session runs LISTEN and nothing else.
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.setdefault("connect_timeout", 5)
    params["application_name"] = "outbox-relay-loop"
    conn = psycopg.connect(autocommit=True, **params)
    try:
        conn.execute(f"LISTEN {CHANNEL}")
    except BaseException:
        conn.close()  # e.g. a standby during a failover refuses LISTEN: retried with a new one
        raise
    return conn


def _take_notifications(conn: psycopg.Connection) -> list[str]:
    """The notifications that have arrived, without waiting (their payloads: "<seq> <event id>",
    the first row of the statement that sent it, outbox/recording.py)."""
    pgconn = conn.pgconn
    pgconn.consume_input()  # raises OperationalError when the connection is gone
    payloads = []
    while (notify := pgconn.notifies()) is not None:
        payloads.append(notify.extra.decode(errors="replace"))
    return payloads


SEQ_MAX = 2**63 - 1  # a bigint's: a larger "seq" would fail the claim on the database


def wakeup_first_seq(heard: list[str]) -> int | None:
    """The lowest seq the notifications name: the wake-up's quick claims start there. None when
    one of them names none (a payload of an older release: its event id alone), and then they
    start at the oldest row."""
    seqs = []
    for payload in heard:
        first = payload.split(" ", 1)[0]
        # Any session may NOTIFY on the channel: a payload that is not ours is no seq.
        if not (first.isascii() and first.isdecimal()) or int(first) > SEQ_MAX:
            return None
        seqs.append(int(first))
    return min(seqs) if seqs else None


def _drain_until_idle(
    stats: LoopStats,
    *,
    using: str,
    quick_claims: bool = False,
    quick_from_seq: int | None = None,
    min_age_s: float = 0.0,
    stopping: threading.Event | None = None,
) -> bool:
    """Drain until nothing is claimable (a drain stops at its time budget: run it again).
    False when the database failed a drain: its session is closed, the next drain opens another.

    `quick_claims` after a notification: one statement per claim, what just committed is sent
    one round trip after the wake-up (`claim_quick`), from the lowest seq heard
    (`quick_from_seq`). The full drains (at start, after a poll timeout, after a reconnection
    and every poll interval: `_full_drains`) use the full claim, which also takes abandoned rows
    and whatever no notification named.
    """
    while not relay_stop_requested() and not (stopping is not None and stopping.is_set()):
        try:
            result = relay_drain(
                time_budget_s=DRAIN_BUDGET_S,
                quick_claims=quick_claims,
                quick_from_seq=quick_from_seq,
                min_age_s=min_age_s,
            )
        except (DatabaseError, InterfaceError) as exc:
            # A restart or failover of PostgreSQL: the loop outlives it (`make run` would
            # otherwise lose its relay). The drain wrote back what it held on a new session
            # while its lease lasted (outbox/relay/reconnect.py); what it could not stays leased
            # until the lease runs out and goes out again then (at least once); nothing is lost.
            logger.warning("relay loop drain failed on the database; reconnecting", extra={"error": repr(exc)})
            with _stats_lock:
                stats.database_errors += 1
            connections[using].close()
            return False
        with _stats_lock:
            stats.drains += 1
            stats.published += result.published
        if result.failed_not_held or result.dead or not result.batches:
            return True  # nothing more now, or rows in backoff: the poll comes back to them
        if result.seconds < DRAIN_BUDGET_S:
            return True  # the drain ended on its own: it claimed everything due
    return True


# The loop's thread and its full drains' thread both count in one LoopStats.
_stats_lock = threading.Lock()


class _FullDrains:
    """The loop's full drains, on a thread of their own: one every poll interval, and one at
    once when the loop asks (at start, after a poll timeout, after a reconnection).

    A full claim reads the pending rows from the oldest: behind a backlog that no claim may take
    (every key held back by a failed row in backoff, during a partial outage) it costs that
    whole backlog, 250 ms a claim at 100,000 such rows. On the loop's own thread it held back
    every notification meanwhile. Here it is a second relay in the process, with its own
    database connection and its own producer (`producer_own`, its sender thread included): the
    claim keeps two relays' rows of a key apart, and a failed send of one drain does not drop
    the other's producer. Its schedule does not depend on the loop's passes: a stream of commits
    that keeps the quick drains claiming does not hold it back.

    The periodic drains leave what is younger than a poll interval to the quick drains (their
    one-statement claims are faster, and a row the full drain took would pay its six or seven
    round trips); the drains the loop asks for take everything due.
    """

    def __init__(self, stats: LoopStats, using: str, poll_s: float) -> None:
        self.stats = stats
        self.using = using
        self.poll_s = poll_s
        self.asked = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="outbox-full-drains", daemon=True)
        self.thread.start()

    def ask(self) -> None:
        """A full drain of everything due, as soon as the running one (if any) is over."""
        self.asked.set()

    def _run(self) -> None:
        with producer_own(FULL_DRAIN_PRODUCER):
            try:
                producer_warm()
                while not self.stopping.is_set() and not relay_stop_requested():
                    asked = self.asked.wait(self.poll_s)
                    if asked:
                        # Cleared only once seen: an ask that comes after a timed-out wait is
                        # served by the next pass, at once and with no minimum age.
                        self.asked.clear()
                    if self.stopping.is_set() or relay_stop_requested():
                        break
                    try:
                        _drain_until_idle(
                            self.stats,
                            using=self.using,
                            quick_claims=False,
                            min_age_s=0.0 if asked else self.poll_s,
                            stopping=self.stopping,
                        )
                    except Exception:
                        # Not the database's (that one is handled and retried): logged, and
                        # the next drain comes a poll interval later, as after any failure.
                        logger.exception("relay loop full drain failed")
            finally:
                producer_close()
                connections[self.using].close()

    def close(self) -> None:
        """Stop after the running drain's current batch, and wait for it: at most a lease, after
        which the rows it holds are another relay's anyway (the thread dies with the process)."""
        self.stopping.set()
        self.asked.set()
        self.thread.join(settings.OUTBOX_CLAIM_TTL)
        if self.thread.is_alive():
            logger.warning("relay loop full drain still running at stop; its claims expire with their lease")


def relay_loop(
    *,
    using: str = "default",
    poll_interval_s: float | None = None,
    waker: Waker | None = None,
    on_listening: Callable[[], None] | None = None,
) -> LoopStats:
    """Run until `relay_stop_requested()`; returns what it did. `on_listening` is called once,
    when the loop's session first runs LISTEN: from then on no commit goes unheard."""
    poll_s = settings.OUTBOX_LOOP_POLL_INTERVAL if poll_interval_s is None else poll_interval_s
    stats = LoopStats()
    listener: psycopg.Connection | None = None
    reconnect_in = 0.1
    database_retry_in = 0.1  # after a drain the database failed: the next one, backing off
    heard: list[str] = []
    frozen = startup_objects_frozen()
    logger.info(
        "relay loop started",
        extra={"channel": CHANNEL, "poll_interval_s": poll_s, "pid": os.getpid(), "gc_frozen_objects": frozen},
    )
    # The quick drains' producer, made now: the full drains' thread (which has its own) takes
    # what is pending at start, and the first event heard would otherwise pay for it.
    producer_warm()
    full_drains = _FullDrains(stats, using, poll_s)
    try:
        while not relay_stop_requested():
            if listener is None:
                try:
                    listener = _listen_connect(using)
                    reconnect_in = 0.1
                    if on_listening is not None:
                        on_listening()
                        on_listening = None
                except psycopg.Error as exc:
                    logger.warning(
                        "relay loop cannot listen; polling until it can",
                        extra={"error": repr(exc), "retry_in_s": reconnect_in},
                    )
            # Every pass drains first: after a notification, quick drains here; at start (rows
            # committed while no loop listened), after a poll timeout and after a reconnection,
            # a full drain of everything due, on the full drains' thread (`_FullDrains`, which
            # also runs one every poll interval): a notification never waits for one.
            drained = True
            if heard:
                drained = _drain_until_idle(
                    stats, using=using, quick_claims=True, quick_from_seq=wakeup_first_seq(heard)
                )
            else:
                full_drains.ask()
            heard = []
            database_retry_in = 0.1 if drained else min(RECONNECT_MAX_S, database_retry_in * 2)
            if relay_stop_requested():
                break
            fds = [waker.read_fd] if waker is not None else []
            if listener is not None:
                fds.append(listener.fileno())
            timeout = poll_s if listener is not None else min(poll_s, reconnect_in)
            if not drained:
                timeout = min(timeout, database_retry_in)
            readable, _, _ = select.select(fds, [], [], timeout)
            if waker is not None and waker.read_fd in readable:
                waker.clear()
            if listener is None:
                reconnect_in = min(RECONNECT_MAX_S, reconnect_in * 2)
                continue
            if not readable:
                stats.polls += 1
                continue
            try:
                heard = _take_notifications(listener)
            except psycopg.Error as exc:
                logger.warning("relay loop lost its listening connection; reconnecting", extra={"error": repr(exc)})
                _close(listener)
                listener = None
                continue
            stats.notifications += len(heard)
            if heard and logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "relay loop woken", extra={"event_id": heard[0].split(" ")[-1], "notifications": len(heard)}
                )
    finally:
        full_drains.close()
        if listener is not None:
            _close(listener)
        logger.info(
            "relay loop stopped",
            extra={"drains": stats.drains, "published": stats.published, "notifications": stats.notifications},
        )
    return stats


def _close(conn: psycopg.Connection) -> None:
    try:
        conn.close()
    except Exception:
        logger.exception("closing the listening connection failed")
