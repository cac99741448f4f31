from __future__ import annotations

from celery import shared_task

from backoffice.services import inbox_purge


@shared_task(name="backoffice.purge_inbox", ignore_result=True)
def purge_inbox_task() -> int:
    return inbox_purge()
