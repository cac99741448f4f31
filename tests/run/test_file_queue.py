"""`make run`'s default Celery broker (the file transport) under concurrent producers and consumers.

Producers and consumers are processes, as in `make run` (API, worker, relay, beat): kombu keeps
its exchanges in one state per process, so two connections in one process are not what the
transport serves (a closing connection clears the other's routing, and its messages go nowhere).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from queue import Empty

from kombu import Connection

import commerce.celery  # noqa: F401 - maps filesystem:// to commerce.filequeue

PER_PRODUCER = 1500


def _connection(folder: Path) -> Connection:
    for name in ("queue", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return Connection(
        "filesystem://",
        transport_options={
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.001,
        },
    )


def _produce(folder: Path, offset: int) -> None:
    with _connection(folder) as conn:
        queue = conn.SimpleQueue("q")
        for n in range(PER_PRODUCER):
            queue.put({"n": offset + n, "padding": "x" * 2000})
        queue.close()


def _consume(folder: Path, producers_done, results) -> None:
    received: list[int] = []
    errors: list[str] = []
    with _connection(folder) as conn:
        queue = conn.SimpleQueue("q")
        while True:
            try:
                message = queue.get(timeout=0.5)
            except Empty:
                if producers_done.is_set():
                    break
                continue
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                errors.append(repr(exc))
                continue
            received.append(message.payload["n"])
            message.ack()
        queue.close()
    results.put((received, errors))


def test_consumers_polling_while_producers_write_get_every_message_whole(tmp_path):
    # given two producer processes writing while two consumer processes poll the same folder
    # (kombu's own transport let a consumer take a message file before its bytes were in, and a
    # process read the exchange table while another truncated it: JSONDecodeError, message lost)
    context = multiprocessing.get_context("fork")
    producers_done, results = context.Event(), context.Queue()
    consumers = [context.Process(target=_consume, args=(tmp_path, producers_done, results)) for _ in range(2)]
    producers = [context.Process(target=_produce, args=(tmp_path, k * PER_PRODUCER)) for k in range(2)]
    # when
    for process in consumers + producers:
        process.start()
    for process in producers:
        process.join(timeout=120)
    producers_done.set()
    outcomes = [results.get(timeout=120) for _ in consumers]
    for process in consumers:
        process.join(timeout=30)

    # then every message arrived once, none torn, and every process ended well
    received = sorted(n for got, _ in outcomes for n in got)
    errors = [error for _, errs in outcomes for error in errs]
    assert [p.exitcode for p in producers + consumers] == [0, 0, 0, 0]
    assert errors == []
    assert received == list(range(2 * PER_PRODUCER))
    assert not any(p.name.startswith("writing-") for p in (tmp_path / "processed").iterdir())
