"""kafka-python's cluster metadata logs the same error every 100 ms while a tracked topic is
missing; the configured logging lets each such line through once a minute."""

from __future__ import annotations

import logging


def test_a_missing_topic_is_logged_once_a_minute_not_ten_times_a_second(caplog):
    # given the project's logging (settings.LOGGING, as Django configured it)
    cluster = logging.getLogger("kafka.cluster")
    # when kafka-python's metadata finds a tracked topic missing 20 times in a row, and another
    # topic missing once
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            cluster.error("Topic %s not found in cluster metadata", "orders-gone")
        cluster.error("Topic %s not found in cluster metadata", "catalog-gone")
    # then each topic's line is there once (before: 20 lines for the first)
    lines = [r.getMessage() for r in caplog.records if r.name == "kafka.cluster"]
    assert lines == [
        "Topic orders-gone not found in cluster metadata",
        "Topic catalog-gone not found in cluster metadata",
    ]
