"""Celery tasks of the outbox: the drain (beat and kicks) and the retention purge; the worker's
start (settings checked) and graceful stop (claims handed back)."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_init, worker_process_shutdown, worker_shutting_down
from django.conf import settings

from outbox.checks import outbox_settings_ensure_valid
from outbox.housekeeping import outbox_purge_published
from outbox.kafka import producer_close
from outbox.kick import relay_kick_taken
from outbox.relay import relay_drain
from outbox.relay.stopping import relay_stop_request
from outbox.wakeup import wakeup_mode


@shared_task(name="outbox.relay_drain", ignore_result=True)
def relay_drain_task(*, safety_net: bool = False) -> dict[str, object]:
    """A drain: kicked after a commit (OUTBOX_WAKEUP=celery), or the beat's (`safety_net`).

    Beside a relay loop (OUTBOX_WAKEUP resolves to notify), the beat's drain is the safety net
    for what the loop did not send: it takes only rows due for OUTBOX_SAFETY_NET_AGE seconds.
    Racing the loop for what just committed, it would send those rows from a worker process
    that may first have to make its producer (a fresh prefork child: a few hundred ms, seen as
    the p99 of bench/e2e.py).
    """
    # Before claiming rows: a commit from now on is not covered by this drain, it kicks again.
    relay_kick_taken()
    min_age_s = settings.OUTBOX_SAFETY_NET_AGE if safety_net and wakeup_mode() == "notify" else 0.0
    return relay_drain(min_age_s=min_age_s).as_dict()


@shared_task(name="outbox.purge_published", ignore_result=True)
def purge_published_task() -> int:
    return outbox_purge_published()


@worker_init.connect
def _check_settings(**kwargs: object) -> None:
    # An impossible combination of settings stops the worker here, with one line, instead of at
    # its first drain.
    outbox_settings_ensure_valid()


@worker_shutting_down.connect
def _hand_back_claims(**kwargs: object) -> None:
    # Warm shutdown (SIGTERM, a deploy, a scale-down): the running drain sends nothing more,
    # writes back what was acknowledged and releases the rest of its claims at once.
    relay_stop_request()


@worker_process_shutdown.connect
def _close_producer(**kwargs: object) -> None:
    producer_close()
