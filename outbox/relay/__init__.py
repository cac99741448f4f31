"""The relay: drain pending outbox rows to Kafka, in per-key order, marking them only when acked.

One drain (`drain.py`) repeats three steps, each in its own module with its database-specific
SQL: `claim.py` (lease the next rows a relay may send), `send.py` (hand them to the idempotent
producer, wait for the acknowledgements), `write_back.py` (mark, fail or release, fenced by the
claim token). `sqlite_lock.py` keeps SQLite to one drain at a time. The protocol and its
guarantees are in docs/OUTBOX.md and docs/GUARANTEES.md.
"""

from outbox.relay.claim import claim_batch
from outbox.relay.drain import relay_drain
from outbox.relay.rows import (
    PERMANENT_ERRORS,
    SEND_FIELDS,
    ClaimedRow,
    DrainResult,
    ProducerUnavailable,
    backoff_seconds,
)
from outbox.relay.send import record_headers
from outbox.relay.write_back import write_back

# The names tests and benchmarks imported before the relay became a package.
_record_headers = record_headers
_write_back = write_back

__all__ = [
    "PERMANENT_ERRORS",
    "SEND_FIELDS",
    "ClaimedRow",
    "DrainResult",
    "ProducerUnavailable",
    "backoff_seconds",
    "claim_batch",
    "record_headers",
    "relay_drain",
    "write_back",
]
