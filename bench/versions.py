"""The versions a benchmark ran against, detected at run time (never written into a script)."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from importlib import metadata
from pathlib import Path


def versions_detected() -> dict[str, str]:
    """Python, the Kafka clients installed, PostgreSQL (the server's own answer) and the broker:
    its release from the jars it runs (KAFKA_JARS_DIR, as scripts/kafka-local starts it) and the
    version kafka-python infers from its ApiVersions answer."""
    from django.conf import settings
    from django.db import connection

    found = {"python": platform.python_version()}
    for package in ("kafka-python", "confluent-kafka", "psycopg", "Django"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        found["postgresql"] = cursor.fetchone()[0].split()[0]
    jars = Path(os.environ.get("KAFKA_JARS_DIR", "")) if os.environ.get("KAFKA_JARS_DIR") else None
    if jars and jars.is_dir():
        for jar in jars.glob("kafka-clients-*.jar"):
            match = re.match(r"kafka-clients-(.+)\.jar$", jar.name)
            if match:
                found["kafka_broker_jars"] = match.group(1)
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS, **settings.KAFKA_SECURITY)
        try:
            broker_id = admin.describe_cluster()["brokers"][0]["broker_id"]
            # The release kafka-python infers from the broker's ApiVersions answer.
            found["kafka_broker_inferred"] = admin.get_broker_version_data(broker_id).broker_version_str
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001 - a version we cannot read is reported as such
        found["kafka_broker_inferred"] = f"unknown ({type(exc).__name__})"
    return found
