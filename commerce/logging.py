"""Structured logs: JSON in production, one readable line in development.

Every record carries the current trace id; a record about an event passes
`extra={"event_id": ..., "topic": ..., ...}` and those fields are printed too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime

from commerce.tracing import current_traceparent, trace_id_of

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            record.trace_id = trace_id_of(current_traceparent.get())
        return True


class RepeatedFilter(logging.Filter):
    """Lets a line through at most once per `every_s` for the same message and arguments.

    kafka-python asks again every 100 ms for a topic it tracks and cannot find, and logs an
    error each time ("Topic ... not found in cluster metadata"): ten lines a second, per
    client, while a topic is missing (the relay holds its rows back, the consumer waits for
    it). Once a minute says the same. Bounded memory: the oldest lines are forgotten first.
    """

    def __init__(self, every_s: float = 60.0, remembered: int = 1024) -> None:
        super().__init__()
        self.every_s = every_s
        self.remembered = remembered
        self._last: dict[tuple[object, ...], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            key = (record.name, record.levelno, record.msg, *record.args) if isinstance(record.args, tuple) else None
            hash(key)
        except TypeError:  # an argument that cannot be a key: let it through
            return True
        if key is None:
            return True
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                return False
            self._last.pop(key, None)
            self._last[key] = now
            while len(self._last) > self.remembered:
                del self._last[next(iter(self._last))]
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_") and value is not None
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(f"{key}={value}" for key, value in _extra_fields(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line = f"{line} [{fields}]"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line
