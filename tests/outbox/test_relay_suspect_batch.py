"""A row whose relay died holding it (abandoned) goes to the producer alone: in a batch of its
own, and only once every batch before it is written back, so that if it kills this relay too no
other row is held (left leased, to be charged an abandoned attempt of its own)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from kafka.errors import KafkaTimeoutError

from outbox.kafka import producer_reset
from outbox.models import OutboxEvent
from outbox.relay import claim_batch, drain, relay_drain
from outbox.relay.send import acknowledged as relay_acknowledged, send as relay_send
from tests.outbox.events_for_tests import outbox_rows_bulk


def _abandon(row: OutboxEvent) -> None:
    """As a relay that died holding the row: its lease token is left, its lease expired."""
    OutboxEvent.objects.filter(seq=row.seq).update(
        claim_token=uuid.uuid4(), claim_expires_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.mark.django_db
def test_an_abandoned_row_behind_others_is_claimed_alone_by_the_next_claim():
    # given five rows of five keys, the third abandoned by a relay that died
    rows = outbox_rows_bulk(topic="t", keys=5, per_key=1)
    _abandon(rows[2])
    # when three claims follow one another
    claims = [[row.seq for row in claim_batch(token=uuid.uuid4(), limit=100)] for _ in range(3)]
    # then the abandoned row is a batch of its own, between the rows before and after it
    assert claims == [[rows[0].seq, rows[1].seq], [rows[2].seq], [rows[3].seq, rows[4].seq]]
    assert OutboxEvent.objects.get(seq=rows[2].seq).attempts == 1


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_abandoned_row_claimed_while_a_batch_is_in_flight_waits_for_its_write_back(kafka_topics, monkeypatch):
    producer_reset()
    # given a backlog of 40 rows of 40 keys; the 16th was abandoned by a relay that died,
    # so the drain's pipelined claims (batches of 10) reach it while a batch is in flight
    rows = outbox_rows_bulk(topic=kafka_topics["catalog-events"], keys=40, per_key=1)
    suspect = rows[15]
    _abandon(suspect)
    held_when_sent: list[int] = []

    def send_noting_the_rows_held(token, batch, **kwargs):
        if any(row.seq == suspect.seq for row in batch):
            held_when_sent.extend(
                OutboxEvent.objects.filter(status="pending", claim_token__isnull=False)
                .exclude(seq=suspect.seq)
                .values_list("seq", flat=True)
            )
        return relay_send(token, batch, **kwargs)

    monkeypatch.setattr(drain, "_send", send_noting_the_rows_held)
    try:
        # when the drain runs
        result = relay_drain(batch_size=10)
    finally:
        producer_reset()
    # then the abandoned row was sent alone: no other row was held (claimed and not yet
    # written back) when it went to the producer, and every row is published
    assert held_when_sent == []
    assert result.published == 40
    assert not OutboxEvent.objects.exclude(status="published").exists()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_abandoned_row_not_sent_because_the_batch_before_failed_stays_a_suspect(kafka_topics, monkeypatch):
    producer_reset()
    # given the backlog above, and the batch in flight when the abandoned row is claimed failing
    rows = outbox_rows_bulk(topic=kafka_topics["catalog-events"], keys=40, per_key=1)
    suspect, failing = rows[15], rows[12]
    _abandon(suspect)

    def acknowledged_with_a_failure(sent, **kwargs):
        outcomes, aborted = relay_acknowledged(sent, **kwargs)
        if any(row.seq == failing.seq for row in sent.rows):
            outcomes[failing.seq] = KafkaTimeoutError("the broker did not answer")
        return outcomes, aborted

    monkeypatch.setattr(drain, "_acknowledged", acknowledged_with_a_failure)
    try:
        # when the drain runs, and stops at the failure
        result = relay_drain(batch_size=10)
    finally:
        producer_reset()
    assert result.failed == 1
    # then the abandoned row was not sent and is handed back as it was found: under an expired
    # lease, its takeover's attempt not counted
    row = OutboxEvent.objects.get(seq=suspect.seq)
    assert (row.status, row.attempts, row.claim_token is not None) == ("pending", 0, True)
    # and the next claim takes it alone again, counting the attempt then
    again = claim_batch(token=uuid.uuid4(), limit=100)
    assert [(r.seq, r.abandoned, r.attempts) for r in again] == [(suspect.seq, True, 1)]
