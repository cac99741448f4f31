"""The projections are one group's: the inbox is per group, so a second group consuming into the
same projections would apply every event again. consume_events refuses it, naming the group."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backoffice.consumer import ConsumerStats
from backoffice.models import InboxEntry
from backoffice.services import ProjectionsOfAnotherGroup, projections_group_check

pytestmark = pytest.mark.django_db


def _applied_by(group: str) -> None:
    now = timezone.now()
    InboxEntry.objects.create(
        consumer_group=group,
        event_id=uuid.uuid4(),
        event_type="StockChanged",
        topic="catalog-events",
        partition=0,
        offset=0,
        occurred_at=now,
        handled_at=now,
    )


@pytest.mark.parametrize("other", ["analytics", "a-before", "zz-after"])
def test_consuming_as_another_group_is_refused_before_anything_is_read(other):
    # given projections the group "backoffice" applied an event to
    _applied_by("backoffice")
    # when another group is asked to consume into them
    with pytest.raises(CommandError, match="would apply every event again") as refused:
        call_command("consume_events", "--group", other, "--until-idle", "1")
    # then it is refused, naming the projections' group (no broker was needed to say so)
    assert "'backoffice'" in str(refused.value)
    assert InboxEntry.objects.filter(consumer_group=other).count() == 0


def test_the_configured_group_is_never_refused(monkeypatch, settings):
    # make run after its checkout moved: a new namespace, so a new group and new topics
    from backoffice.management.commands import consume_events

    settings.BACKOFFICE_GROUP_ID = "moved.backoffice"
    _applied_by("old.backoffice")
    started: list[str] = []

    class _Consumer:
        def __init__(self, *, group_id: str, **_: object) -> None:
            started.append(group_id)
            self.topics: list[str] = []
            self.group_id = group_id

        def install_signal_handlers(self) -> None: ...

        def run(self, **_: object) -> object:
            return ConsumerStats()

        def close(self) -> None: ...

    monkeypatch.setattr(consume_events, "EventConsumer", _Consumer)
    call_command("consume_events", "--until-idle", "0")
    assert started == ["moved.backoffice"]


def test_the_projections_group_itself_and_an_empty_inbox_pass():
    projections_group_check("anything")  # nothing applied yet
    _applied_by("backoffice")
    projections_group_check("backoffice")
    with pytest.raises(ProjectionsOfAnotherGroup) as refused:
        projections_group_check("other")
    assert refused.value.group == "backoffice"
