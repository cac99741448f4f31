"""kombu's file transport made safe for several processes: `make run`'s default Celery broker.

kombu's own creates a message file and then writes into it. A worker polling in between moves
the empty file away, fails to decode it and dies ("Unrecoverable error: JSONDecodeError"), and
the message is lost (the producer writes into a file already gone): under `make run`'s traffic
the relay and the domain worker died this way every few seconds. It also takes a message by
moving it to the system's temporary folder, a copy when that is another filesystem.

Here a message is written whole under a temporary name and renamed into the queue folder, and a
consumer takes one by renaming it into the processed folder: both atomic on one filesystem, and
only one consumer can win a message. The exchange's binding table (the control folder) had the
same race: kombu truncates it before it locks it, so a second process declaring the queue at that
moment read an empty table (JSONDecodeError) and lost its connection; here it is rewritten whole
under a lock of its own. The cost of a poll is a listing of the queue folder, so it
grows with the backlog; the relay's kicks are coalesced (outbox/kick.py) so that they never make
one.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    def _put(  # type: ignore[override]  # kombu's filesystem.Channel's own signature, off its base's
        self, queue: str, payload: dict[str, Any], **kwargs: Any
    ) -> None:
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        writing = os.path.join(self.processed_folder, f"writing-{name}")
        with open(writing, "wb") as message:
            message.write(str_to_bytes(dumps(payload)))
        os.replace(writing, os.path.join(self.data_folder_out, name))

    def _get(self, queue: str) -> dict[str, Any]:  # type: ignore[override]  # as _put
        suffix = f".{queue}.msg"
        for filename in sorted(os.listdir(self.data_folder_in)):
            if not filename.endswith(suffix):
                continue
            taken = os.path.join(self.processed_folder, filename)
            try:
                os.rename(os.path.join(self.data_folder_in, filename), taken)
            except OSError:
                continue  # another consumer took it
            try:
                with open(taken, "rb") as message:
                    payload = message.read()
            finally:
                if not self.store_processed:
                    os.remove(taken)
            return loads(bytes_to_str(payload))
        raise Empty

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        self.control_folder.mkdir(exist_ok=True)
        table_path = self.control_folder / f"{exchange}.exchange"
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        with open(self.control_folder / f"{exchange}.exchange.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                with open(table_path, "rb") as table:
                    bindings = [filesystem.exchange_queue_t(*row) for row in loads(bytes_to_str(table.read()))]
            except FileNotFoundError:
                bindings = []
            if binding in bindings:
                return
            bindings.insert(0, binding)
            writing = self.control_folder / f"writing-{uuid.uuid4()}-{exchange}.exchange"
            with open(writing, "wb") as table:
                table.write(str_to_bytes(dumps(bindings)))
            os.replace(writing, table_path)


class Transport(filesystem.Transport):
    Channel = Channel
