"""Celery tasks of the outbox: the drain (beat and kicks) and the retention purge."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_process_shutdown

from outbox.housekeeping import outbox_purge_published
from outbox.kafka import producer_close
from outbox.kick import relay_kick_taken
from outbox.relay import relay_drain


@shared_task(name="outbox.relay_drain", ignore_result=True)
def relay_drain_task() -> dict[str, object]:
    # Before claiming rows: a commit from now on is not covered by this drain, it kicks again.
    relay_kick_taken()
    return relay_drain().as_dict()


@shared_task(name="outbox.purge_published", ignore_result=True)
def purge_published_task() -> int:
    return outbox_purge_published()


@worker_process_shutdown.connect
def _close_producer(**kwargs: object) -> None:
    producer_close()
