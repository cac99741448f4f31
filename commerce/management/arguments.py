"""Argument types of the management commands: a bad value is refused by argparse.

Each raises `argparse.ArgumentTypeError`, so `manage.py` prints one usage line naming the
option and exits 2 (and `call_command` raises `CommandError`), before the command reads the
database or connects to Kafka.
"""

from __future__ import annotations

import argparse
import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

INT32_MAX = 2**31 - 1  # Kafka's int fields (partition count, max.poll.records), an SQL integer
INT64_MAX = 2**63 - 1  # an SQL bigint (the primary keys)

# Kafka's own rule for a topic name (org.apache.kafka.common.internals.Topic).
TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def integer_between(minimum: int, maximum: int) -> Callable[[str], int]:
    """An integer from `minimum` to `maximum` (both included)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be from {minimum} to {maximum}")
        return value

    return parse


def seconds(*, zero_allowed: bool) -> Callable[[str], float]:
    """A finite number of seconds, above 0 (or from 0 with `zero_allowed`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
            bound = ">= 0" if zero_allowed else "> 0"
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds {bound}")
        return value

    return parse


def text_not_blank(text: str) -> str:
    """A string with something other than whitespace in it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def topic_name(text: str) -> str:
    """A legal Kafka topic name: 1 to 249 of a-z A-Z 0-9 . _ -, not `.` nor `..`."""
    if not TOPIC_NAME.fullmatch(text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -, not . nor ..)"
        )
    return text


def uuid_text(text: str) -> str:
    """A UUID, written in its canonical form."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def moment(text: str) -> datetime:
    """An ISO 8601 date and time (2026-11-27T09:30:00+01:00); without an offset, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date and time (e.g. 2026-11-27T09:30:00Z)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
