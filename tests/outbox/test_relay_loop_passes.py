"""Where the relay loop's quick claims start after a wake-up (outbox/relay/listen.py)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from outbox.relay.listen import wakeup_first_seq


def test_a_wake_up_starts_its_quick_claims_at_the_lowest_seq_it_heard():
    heard = ["1205 7d1f0a52-1b3e-4c4b-9a55-2f0f7e0c1a10", "1187 0b8c3f7e-5d2a-4f4e-8b1c-6a9d2e4f5b21"]
    assert wakeup_first_seq(heard) == 1187


def test_a_notification_that_names_no_seq_starts_the_quick_claims_at_the_oldest_row():
    # a payload of a release before the seq was in it: its event id alone
    assert (
        wakeup_first_seq(["1205 7d1f0a52-1b3e-4c4b-9a55-2f0f7e0c1a10", "0b8c3f7e-5d2a-4f4e-8b1c-6a9d2e4f5b21"]) is None
    )
    assert wakeup_first_seq([]) is None


def test_a_payload_of_another_session_is_no_seq():
    # any session may NOTIFY on the channel; '²' is a digit to str.isdigit(), not to int()
    assert wakeup_first_seq(["²"]) is None
    assert wakeup_first_seq(["-5 x"]) is None
    # a number no seq can be (bigint): the claim's parameter would fail the drain on the database
    assert wakeup_first_seq([f"{2**63} x"]) is None
    assert wakeup_first_seq([f"{2**63 - 1} x"]) == 2**63 - 1


def test_a_poll_interval_of_zero_is_refused_before_the_loop_starts():
    # a loop that polled without pause would claim back to back, on both of its threads
    with pytest.raises(CommandError, match="--poll-interval is 0"):
        call_command("relay_loop", "--poll-interval", "0")
