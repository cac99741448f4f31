"""`make run`'s default Celery broker (the file transport) under concurrent producers and consumers."""

from __future__ import annotations

import threading
from pathlib import Path

from kombu import Connection

import commerce.celery  # noqa: F401 - maps filesystem:// to commerce.filequeue


def _connection(folder: Path) -> Connection:
    for name in ("queue", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return Connection("filesystem://", transport_options={
        "data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control"),
        "store_processed": False, "polling_interval": 0.001})


def test_a_consumer_polling_while_producers_write_gets_every_message_whole(tmp_path):  # noqa: ANN001
    # given two producers writing while two consumers poll the same folder (kombu's own transport
    # let a consumer take a message file before its bytes were in: JSONDecodeError, message lost)
    per_producer = 1500
    received: list[int] = []
    errors: list[str] = []
    done = threading.Event()

    def produce(offset: int) -> None:
        with _connection(tmp_path) as conn:
            queue = conn.SimpleQueue("q")
            for n in range(per_producer):
                queue.put({"n": offset + n, "padding": "x" * 2000})
            queue.close()

    def consume() -> None:
        with _connection(tmp_path) as conn:
            queue = conn.SimpleQueue("q")
            while not (done.is_set() and len(received) >= 2 * per_producer):
                try:
                    message = queue.get(timeout=0.5)
                except queue.Empty:
                    if done.is_set():
                        return
                    continue
                except Exception as exc:  # noqa: BLE001 - what the test looks for
                    errors.append(repr(exc))
                    continue
                received.append(message.payload["n"])
                message.ack()
            queue.close()

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    producers = [threading.Thread(target=produce, args=(k * per_producer,)) for k in range(2)]
    # when
    for thread in consumers + producers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    for thread in consumers:
        thread.join(timeout=60)

    # then every message arrived once, none torn
    assert errors == []
    assert sorted(received) == list(range(2 * per_producer))
    assert not any(p.name.startswith("writing-") for p in (tmp_path / "processed").iterdir())
