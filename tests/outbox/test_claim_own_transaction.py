"""On PostgreSQL, outside a caller's transaction, a claim begins and ends its own transaction
with its first and last statements (two round trips fewer than transaction.atomic()): what it
leased is committed when it returns, and whatever fails in between leaves nothing leased and the
session outside any transaction."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from django.db import connection

from outbox.models import OutboxEvent
from outbox.relay import claim as claim_module, claim_batch
from tests.outbox.events_for_tests import outbox_rows_bulk

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.fail("the claim's own transaction is PostgreSQL's: run with DATABASE_URL=postgres://...")


def _leased_seen_from_another_session() -> int:
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as other:
        found = other.execute("SELECT count(*) FROM outbox_outboxevent WHERE claim_token IS NOT NULL").fetchone()
    assert found is not None
    return int(found[0])


def _idle() -> bool:
    return connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_claim_commits_what_it_leased_and_leaves_the_session_outside_a_transaction():
    # given
    outbox_rows_bulk(topic="t", keys=5, per_key=4)
    token = uuid.uuid4()
    # when
    claimed = claim_batch(token=token, limit=12)
    # then
    assert len(claimed) == 12
    assert not connection.in_atomic_block
    assert _idle()
    assert _leased_seen_from_another_session() == 12
    # and the transaction-local planner settings went with it
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_seqscan")
        assert cursor.fetchone()[0] == "on"


def test_a_claim_with_nothing_to_lease_ends_its_transaction_too():
    # given every row dead: the claim finds nothing
    outbox_rows_bulk(topic="t", keys=2, per_key=1)
    OutboxEvent.objects.update(status=OutboxEvent.Status.DEAD)
    # when / then
    assert claim_batch(token=uuid.uuid4(), limit=10) == []
    assert _idle()


def test_a_claim_that_fails_in_between_leases_nothing_and_leaves_no_transaction_open(monkeypatch):
    # given a failure after the candidates were locked, before the lease
    outbox_rows_bulk(topic="t", keys=5, per_key=4)

    def failing(candidates):
        raise RuntimeError("failed in between")

    monkeypatch.setattr(claim_module, "_settle", failing)
    # when
    with pytest.raises(RuntimeError, match="failed in between"):
        claim_batch(token=uuid.uuid4(), limit=12)
    # then: rolled back, the session usable and idle, the candidates' row locks released
    assert _idle()
    assert _leased_seen_from_another_session() == 0
    monkeypatch.undo()
    assert len(claim_batch(token=uuid.uuid4(), limit=20)) == 20
