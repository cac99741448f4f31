"""The relay's optional librdkafka producer (KAFKA_CLIENT=confluent), without a broker: its errors
read as kafka-python's (the write-back tells permanent failures by class), its settings are
kafka-python's under librdkafka's names, and it fails at once when no broker answers.

Against the real broker it runs every guarantee test of the relay: the modules marked
`relay_clients` (tests/conftest.py).
"""

from __future__ import annotations

import threading
import time

import confluent_kafka
import pytest
from kafka import errors as kafka_errors

from outbox.kafka import producer_config
from outbox.kafka_confluent import ConfluentDeliveryFuture, ConfluentProducer, confluent_config, delivery_error
from outbox.relay.rows import PERMANENT_ERRORS
from tests.support.ports import free_ports_outside_ephemeral_range


@pytest.mark.parametrize(
    "code,expected,permanent",
    [
        pytest.param(confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE, kafka_errors.MessageSizeTooLargeError, True),
        pytest.param(confluent_kafka.KafkaError.TOPIC_EXCEPTION, kafka_errors.InvalidTopicError, True),
        pytest.param(
            confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION, kafka_errors.NotLeaderForPartitionError, False
        ),
        pytest.param(confluent_kafka.KafkaError._MSG_TIMED_OUT, kafka_errors.KafkaTimeoutError, False),
        pytest.param(confluent_kafka.KafkaError._UNKNOWN_TOPIC, kafka_errors.UnknownTopicOrPartitionError, False),
        pytest.param(confluent_kafka.KafkaError._PURGE_QUEUE, kafka_errors.KafkaError, False),
        pytest.param(confluent_kafka.KafkaError._INVALID_ARG, kafka_errors.KafkaError, False),
    ],
)
def test_a_librdkafka_error_reads_as_the_kafka_python_exception_of_the_same_meaning(code, expected, permanent):
    error = delivery_error(confluent_kafka.KafkaError(code, "from the test"))
    assert isinstance(error, expected)
    assert isinstance(error, PERMANENT_ERRORS) is permanent
    assert permanent or error.retriable
    assert "from the test" in str(error)


def test_a_fatal_error_is_an_illegal_state():
    error = delivery_error(confluent_kafka.KafkaError(confluent_kafka.KafkaError._FATAL, "fenced", fatal=True))
    assert isinstance(error, kafka_errors.IllegalStateError)


def test_the_producer_settings_are_kafka_pythons_under_librdkafkas_names(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["a:9092", "b:9092"]
    settings.KAFKA_SECURITY = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "relay",
        "sasl_plain_password": "secret",
        "ssl_cafile": "/etc/ca.pem",
    }
    found = confluent_config(producer_config())
    assert found["bootstrap.servers"] == "a:9092,b:9092"
    assert found["acks"] == "all"
    assert found["enable.idempotence"] is True
    assert found["max.in.flight.requests.per.connection"] == 5
    assert found["allow.auto.create.topics"] is False
    assert found["security.protocol"] == "SASL_SSL"
    assert found["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (found["sasl.username"], found["sasl.password"]) == ("relay", "secret")
    assert found["ssl.ca.location"] == "/etc/ca.pem"
    # kafka-python's partitioner and record size limit, not librdkafka's defaults
    assert found["partitioner"] == "murmur2_random"
    assert found["message.max.bytes"] == 1024 * 1024
    assert not any("_" in name for name in found if name != "logger")  # no kafka-python name left over


def test_a_delivery_future_waits_raises_or_returns_as_kafka_pythons_does():
    waiting = ConfluentDeliveryFuture()
    with pytest.raises(kafka_errors.KafkaTimeoutError):
        waiting.get(timeout=0.01)
    assert not waiting.is_done
    failed = ConfluentDeliveryFuture()
    error = confluent_kafka.KafkaError(confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE, "big")
    failed.delivered(error, None)  # type: ignore[arg-type]  # librdkafka passes the message; unread on error
    assert failed.is_done
    with pytest.raises(kafka_errors.MessageSizeTooLargeError):
        failed.get(timeout=0)


def test_a_get_waiting_before_the_report_wakes_when_it_comes():
    # The future makes its waiter only when a get() comes before the report (a threading.Event
    # per record cost the sender more than librdkafka's produce()): the late report must wake it.
    for report in ("delivered", "abandoned"):
        future = ConfluentDeliveryFuture()
        with pytest.raises(kafka_errors.KafkaTimeoutError):
            future.get(timeout=0.01)  # a get that gave up: the next one still waits
        outcome: list[BaseException] = []

        def wait(future=future, outcome=outcome):
            try:
                future.get(timeout=10)
            except BaseException as exc:  # noqa: BLE001 - the outcome under test
                outcome.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.05)
        assert waiter.is_alive()  # waiting, not returned early
        if report == "delivered":
            error = confluent_kafka.KafkaError(confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE, "big")
            future.delivered(error, None)  # type: ignore[arg-type]
        else:
            future.abandoned(kafka_errors.KafkaTimeoutError("closed"))
        waiter.join(5)
        assert not waiter.is_alive()
        assert len(outcome) == 1
        assert isinstance(
            outcome[0],
            kafka_errors.MessageSizeTooLargeError if report == "delivered" else kafka_errors.KafkaTimeoutError,
        )
        assert "no delivery report" not in str(outcome[0])


def test_without_a_broker_the_producer_fails_within_its_bootstrap_timeout(settings):
    port = free_ports_outside_ephemeral_range(1)  # nothing listens there; never a source port
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{port}"]
    config = {**producer_config(), "bootstrap_timeout_ms": 1000}
    started = time.monotonic()
    with pytest.raises(kafka_errors.KafkaConnectionError):
        ConfluentProducer(config)
    assert time.monotonic() - started < 10  # not librdkafka's 30 s message timeout: a drain fails fast


@pytest.mark.integration
@pytest.mark.django_db
def test_close_0_completes_every_future_and_refuses_later_sends(kafka_topics):
    # given records handed over, many of them not yet acknowledged (the last batch lingers: a
    # test thread descheduled before close(0) must not find them all acknowledged)
    producer = ConfluentProducer({**producer_config(), "linger_ms": 10_000})
    topic = kafka_topics["catalog-events"]
    futures = [producer.send(topic, key=b"k", value=b"v" * 1000, headers=[]) for _ in range(5000)]
    # when the relay drops it after a failure
    producer.close(0)
    # then no future is left waiting for its deadline: each was acknowledged or failed, and
    # what the producer still held was dropped, not sent
    assert all(future.is_done for future in futures)
    failed = [future for future in futures if future.exception is not None]
    assert failed, "close(0) came after every acknowledgement: nothing was left to drop"
    for future in failed:
        with pytest.raises(kafka_errors.KafkaError):
            future.get(timeout=0)
    # and nothing more is handed over
    with pytest.raises(kafka_errors.IllegalStateError):
        producer.send(topic, key=b"k", value=b"late", headers=[])
    assert producer.broken() is not None


@pytest.mark.integration
@pytest.mark.django_db
def test_a_send_racing_close_0_is_refused_or_completed(kafka_topics):
    import threading

    # given a thread handing records over as fast as it can (the relay's sender thread)
    producer = ConfluentProducer(producer_config())
    topic = kafka_topics["catalog-events"]
    futures: list = []
    refused = threading.Event()

    def sending() -> None:
        while True:
            try:
                futures.append(producer.send(topic, key=b"k", value=b"v" * 100, headers=[]))
            except kafka_errors.IllegalStateError:
                refused.set()
                return

    sender = threading.Thread(target=sending)
    sender.start()
    while len(futures) < 2000:
        time.sleep(0.001)
    # when another thread drops the producer under it
    producer.close(0)
    sender.join(timeout=10)
    # then the sender was refused, and every record it handed over before that is done
    assert refused.is_set()
    assert all(future.is_done for future in futures)


@pytest.mark.integration
@pytest.mark.django_db
def test_a_flush_that_times_out_says_so(kafka_topics):
    # given a record the broker cannot take yet (its topic does not exist)
    producer = ConfluentProducer(producer_config())
    try:
        producer.send(f"{kafka_topics['catalog-events']}-missing", key=b"k", value=b"v", headers=[])
        # when the relay flushes with a deadline shorter than the record's wait
        # then it hears that the flush did not complete (acknowledged() logs it and reads each future)
        with pytest.raises(kafka_errors.KafkaTimeoutError):
            producer.flush(0.2)
    finally:
        producer.close(0)


@pytest.mark.integration
@pytest.mark.django_db
def test_flush_returns_once_every_record_is_acknowledged(kafka_topics):
    producer = ConfluentProducer(producer_config())
    try:
        futures = [producer.send(kafka_topics["catalog-events"], key=b"k", value=b"v", headers=[]) for _ in range(50)]
        producer.flush(10)
        assert all(future.is_done and future.exception is None for future in futures)
        assert [future.value.offset for future in futures] == list(range(50))
    finally:
        producer.close(0)
