"""The peer side of bench/peers.py: django-reliable-outbox 0.1.1 in its own venv (Python 3.12).

Run by bench/peers.py with var/peer-venv/bin/python (requirements-peer.txt), never imported by
the project. A minimal Django site configured here, with the peer's documented settings: its
Kafka destination (confluent-kafka; the broker's ack awaited per message, as it documents),
LISTEN/NOTIFY on (its default and its fast path), everything else at its defaults.

    peer_child.py migrate
    peer_child.py fill N                      # N pending messages (1,000 per transaction)
    peer_child.py drain CONCURRENCY           # `outbox_worker --burst`: prints events/s
    peer_child.py worker OUT CONCURRENCY      # `outbox_worker` until SIGTERM; acks -> OUT
    peer_child.py write RATE SECONDS OFFSET   # publish on schedule, one per transaction
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KEYS = 100


def configure() -> None:
    import django
    from django.conf import settings

    url = urlsplit(os.environ["PEER_DATABASE_URL"])
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "reliable_outbox"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": url.path.lstrip("/"),
                "USER": url.username,
                "PASSWORD": url.password,
                "HOST": url.hostname,
                "PORT": url.port or 5432,
            }
        },
        USE_TZ=True,
        LOGGING_CONFIG=None,
        RELIABLE_OUTBOX={
            "DESTINATIONS": {
                "default": {
                    "BACKEND": "reliable_outbox.destinations.kafka.KafkaDestination",
                    "OPTIONS": {
                        "topic": os.environ["PEER_TOPIC"],
                        "config": {"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]},
                    },
                }
            },
        },
    )
    django.setup()


def fill(count: int) -> None:
    from django.db import transaction
    from reliable_outbox import publish

    for start in range(0, count, 1000):
        with transaction.atomic():
            for n in range(start, min(count, start + 1000)):
                publish("SequenceRecorded", {"product_id": f"k{n % KEYS}", "sequence": n}, key=f"k{n % KEYS}")


def drain(concurrency: int) -> None:
    from django.core.management import call_command
    from reliable_outbox.models import OutboxMessage

    pending = OutboxMessage.objects.count()
    started = time.monotonic()
    call_command("outbox_worker", burst=True, concurrency=concurrency)
    seconds = time.monotonic() - started
    left = OutboxMessage.objects.exclude(status="delivered").count()
    print(json.dumps({"messages": pending - left, "seconds": seconds, "left": left}), flush=True)


def worker(out_path: str, concurrency: int) -> None:
    import atexit

    from django.core.management import call_command
    from reliable_outbox.destinations.kafka import KafkaDestination

    acks: list[tuple[str, float]] = []
    original = KafkaDestination.deliver

    def deliver(self: KafkaDestination, envelope: Any) -> None:
        original(self, envelope)  # returns once the broker acknowledged (flush, on_delivery)
        acks.append((str(envelope.message_id), time.monotonic()))

    KafkaDestination.deliver = deliver
    atexit.register(lambda: Path(out_path).write_text(json.dumps(acks)))
    print("relay loop listening", flush=True)
    call_command("outbox_worker", concurrency=concurrency)


def write(rate: float, seconds: float, offset: int) -> None:
    from django.db import transaction
    from reliable_outbox import publish

    from open_loop import commit_on_schedule

    def commit(first: int, count: int) -> list[str]:
        ids = []
        with transaction.atomic():
            for n in range(first, first + count):
                key = f"k{(offset + n) % KEYS}"
                ids.append(str(publish("SequenceRecorded", {"product_id": key, "sequence": n}, key=key)))
        return ids

    committed, achieved, per_transaction = commit_on_schedule(
        rate=rate, seconds=seconds, max_per_transaction=10, commit=commit
    )
    print(
        json.dumps({"committed": committed, "achieved_rate": achieved, "per_transaction": per_transaction}),
        flush=True,
    )


def main() -> None:
    configure()
    action, *args = sys.argv[1:]
    if action == "migrate":
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    elif action == "fill":
        fill(int(args[0]))
    elif action == "drain":
        drain(int(args[0]))
    elif action == "worker":
        worker(args[0], int(args[1]))
    elif action == "write":
        write(float(args[0]), float(args[1]), int(args[2]))
    elif action == "truncate":
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE reliable_outbox_outboxmessage")
    elif action == "versions":
        from importlib.metadata import version

        import confluent_kafka
        import django

        print(
            json.dumps(
                {
                    "django-reliable-outbox": version("django-reliable-outbox"),
                    "peer_confluent-kafka": version("confluent-kafka"),
                    "peer_librdkafka": confluent_kafka.libversion()[0],
                    "peer_django": django.get_version(),
                    "peer_python": sys.version.split()[0],
                }
            ),
            flush=True,
        )
    else:
        raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main()
