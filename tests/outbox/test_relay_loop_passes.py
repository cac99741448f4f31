"""Which drains one pass of the relay loop runs (outbox/relay/listen.py, `drains_of_a_pass`)."""

from __future__ import annotations

from outbox.relay.listen import drains_of_a_pass


def test_a_notification_is_served_by_quick_claims_even_when_the_full_drain_is_due():
    # the full drain (abandoned rows) comes after the quick one, not instead of it
    assert drains_of_a_pass(heard=True, full_due=True) == (True, False)


def test_a_notification_before_the_full_drain_is_due_gets_quick_claims_only():
    assert drains_of_a_pass(heard=True, full_due=False) == (True,)


def test_a_pass_without_a_notification_is_a_full_drain():
    # at start, after a poll timeout, after a reconnection
    assert drains_of_a_pass(heard=False, full_due=False) == (False,)
    assert drains_of_a_pass(heard=False, full_due=True) == (False,)
