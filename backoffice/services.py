"""Back-office operations besides consuming: dead-letter redrive and inbox retention."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backoffice.contract import ContractViolation, event_parse
from backoffice.isolation import error_is_transient
from backoffice.models import DeadLetter, InboxEntry
from backoffice.projections import DATABASE_REFUSED, batch_apply

logger = logging.getLogger(__name__)


class ProjectionsOfAnotherGroup(Exception):
    """The projections hold another group's effects: a second group would apply every event
    again (the inbox is per group, the projections are shared)."""

    def __init__(self, message: str, *, group: str) -> None:
        super().__init__(message)
        self.group = group


def projections_group_check(group: str) -> None:
    """Raise ProjectionsOfAnotherGroup when the inbox holds events of a group other than
    `group`. Two range probes of the inbox's (group, event id) index, not a scan."""
    others = InboxEntry.objects.filter(consumer_group__lt=group).values_list("consumer_group", flat=True)[:1]
    found = list(others) or list(
        InboxEntry.objects.filter(consumer_group__gt=group).values_list("consumer_group", flat=True)[:1]
    )
    if found:
        raise ProjectionsOfAnotherGroup(
            f"the projections hold the effects of group {found[0]!r}: group {group!r} would apply every "
            f"event again. Use {found[0]!r} (BACKOFFICE_GROUP_ID), or start over with "
            f"`rebuild_projections --group {group}` once group {found[0]!r} is stopped for good",
            group=found[0],
        )


@dataclass
class RedriveResult:
    redriven: int = 0
    still_failing: int = 0


def dead_letters_redrive(*, ids: list[int] | None = None) -> RedriveResult:
    """Handle open dead letters again (after a fix); those that now pass are applied once."""
    result = RedriveResult()
    letters = DeadLetter.objects.filter(status=DeadLetter.Status.OPEN).order_by("id")
    if ids is not None:
        letters = letters.filter(id__in=ids)
    for letter in letters:
        headers = [(name, value.encode("latin-1")) for name, value in letter.headers]
        key = bytes(letter.key) if letter.key is not None else None
        value = bytes(letter.value) if letter.value is not None else None
        try:
            event = event_parse(
                topic=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
                key=key,
                value=value,
                headers=headers,
            )
        except ContractViolation as exc:
            letter.error = str(exc)
            letter.save(update_fields=["error"])
            result.still_failing += 1
            continue
        try:
            with transaction.atomic():
                batch_apply(group=letter.consumer_group, events=[event], poison=[])
                letter.status = DeadLetter.Status.REDRIVEN
                letter.redriven_at = timezone.now()
                letter.save(update_fields=["status", "redriven_at"])
        except Exception as exc:
            if error_is_transient(exc):
                raise  # the database is away: nothing to learn about this letter, stop here
            # A value the database still refuses: the letter stays open with its message, and
            # the letters after it are tried all the same.
            letter.error = f"{DATABASE_REFUSED}: {type(exc).__name__}: {exc}".strip()[:5000]
            letter.save(update_fields=["error"])
            result.still_failing += 1
            continue
        result.redriven += 1
    return result


def inbox_purge(*, older_than: timedelta | None = None, chunk_size: int = 10000) -> int:
    """Forget handled event ids older than BACKOFFICE_INBOX_RETENTION, in bounded chunks."""
    cutoff = timezone.now() - (older_than or settings.BACKOFFICE_INBOX_RETENTION)
    deleted_total = 0
    while True:
        ids = list(InboxEntry.objects.filter(handled_at__lt=cutoff).values_list("id", flat=True)[:chunk_size])
        if not ids:
            return deleted_total
        deleted, _ = InboxEntry.objects.filter(id__in=ids).delete()
        deleted_total += deleted
