"""The cost of checking an event's payload against its JSON Schema, per record, on the consumer's
path: the compiled validator the back office uses (fastjsonschema) against jsonschema's
validator of the same schema (the baseline: the library the issue names), and the whole
`event_parse` of a record (headers, JSON, schema, conversion, upcast) of OrderConfirmed v2 and
v1, against the hand-written checks it replaced (read from git).

    .venv/bin/python bench/schema.py [--quick]

No database or broker: the parse is pure Python. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _setup() -> None:
    sys.path.insert(0, str(PROJECT_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ["DATABASE_URL"] = "sqlite:///:memory:"
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", "benchmarks-only-not-a-secret")
    os.environ.setdefault("PAYMENT_CALLBACK_SECRET", "benchmarks-only")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def _per_call_us(function: Callable[[Any], object], argument: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(3):  # the best of three: the machine is shared
        start = time.perf_counter()
        for _ in range(repeat):
            function(argument)
        best = min(best, (time.perf_counter() - start) / repeat * 1e6)
    return best


# The contract before the JSON Schemas (hand-written checks of each field), from git.
BEFORE = "c520974"


def _event_parse_before() -> Callable[..., Any] | None:
    import subprocess
    import types

    source = subprocess.run(
        ["git", "show", f"{BEFORE}:backoffice/contract.py"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if source.returncode != 0:
        return None
    module = sys.modules["contract_before"] = types.ModuleType("contract_before")
    exec(compile(source.stdout, "contract_before.py", "exec"), module.__dict__)
    parse: Callable[..., Any] = module.event_parse
    return parse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    _setup()
    import jsonschema

    from backoffice.contract import IncomingEvent, event_parse
    from backoffice.schemas import _validator, payload_schema
    from tests.backoffice.stream import Record, order_event

    repeat = 2_000 if args.quick else 20_000
    record = order_event("OrderConfirmed", "41", [("3", 2, "5.00"), ("4", 1, "12.50"), ("5", 3, "0.99")])
    payload = json.loads(record.value)
    schema = payload_schema("OrderConfirmed", 1)
    compiled = _validator("OrderConfirmed", 1)
    interpreted = jsonschema.Draft7Validator(schema)
    fast_us = _per_call_us(compiled, payload, repeat)
    jsonschema_us = _per_call_us(interpreted.validate, payload, max(200, repeat // 10))

    def parse(item: Record) -> IncomingEvent:
        return event_parse(topic="t", partition=0, offset=0, key=item.key, value=item.value, headers=item.headers)

    parse_us = _per_call_us(parse, record, repeat)
    v2 = order_event("OrderConfirmed", "41", [("3", 2, "5.00"), ("4", 1, "12.50"), ("5", 3, "0.99")])
    v2_payload = {
        **json.loads(v2.value),
        "currency": "EUR",
        "lines": [{**line, "subtotal": "0.00"} for line in json.loads(v2.value)["lines"]],
    }
    v2 = type(v2)(
        v2.topic_stream,
        v2.key,
        json.dumps(v2_payload).encode(),
        [(n, b"2" if n == "event_version" else value) for n, value in v2.headers],
    )
    parse_v2_us = _per_call_us(parse, v2, repeat)
    before = _event_parse_before()
    before_us = None
    if before is not None:
        before_us = _per_call_us(
            lambda item: before(topic="t", partition=0, offset=0, key=item.key, value=item.value, headers=item.headers),
            record,
            repeat,
        )
    print(
        f"OrderConfirmed v1, 3 lines: compiled schema (fastjsonschema) {fast_us:.1f} us, "
        f"jsonschema {jsonschema_us:.1f} us ({jsonschema_us / fast_us:.1f}x)"
    )
    print(
        f"whole event_parse: v2 {parse_v2_us:.1f} us, v1 (with its upcast to v2) {parse_us:.1f} us; "
        "v1 before the schemas "
        + (
            f"(hand-written checks, {BEFORE}) {before_us:.1f} us ({parse_us / before_us:.2f}x)"
            if before_us
            else "unavailable (no git)"
        )
    )
    print(
        json.dumps(
            {
                "benchmark": "schema",
                "compiled_us": round(fast_us, 2),
                "jsonschema_us": round(jsonschema_us, 2),
                "baseline_ratio": round(jsonschema_us / fast_us, 1),
                "event_parse_us": round(parse_us, 2),
                "event_parse_v2_us": round(parse_v2_us, 2),
                "event_parse_before_us": round(before_us, 2) if before_us else None,
                "event_parse_ratio": round(parse_us / before_us, 2) if before_us else None,
            }
        )
    )


if __name__ == "__main__":
    main()
