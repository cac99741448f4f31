from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from outbox.checks import outbox_settings_ensure_valid
from outbox.kafka import producer_close
from outbox.relay.listen import Waker, relay_loop
from outbox.relay.stopping import relay_stop_request
from outbox.wakeup import wakeup_mode


class Command(BaseCommand):
    help = (
        "The relay loop (PostgreSQL): LISTENs for the NOTIFY of each recording transaction and "
        "drains at once, polls every OUTBOX_LOOP_POLL_INTERVAL, stops gracefully on SIGTERM "
        'or Ctrl-C. Several may run. docs/OUTBOX.md, "Wake-up".'
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="seconds between drains when nothing is heard (default OUTBOX_LOOP_POLL_INTERVAL)",
        )

    def handle(self, *args: Any, poll_interval: float | None = None, **options: Any) -> None:
        if poll_interval is not None and poll_interval <= 0:
            raise CommandError(f"--poll-interval is {poll_interval:g}: it must be above 0 (seconds)")
        if wakeup_mode() != "notify":
            raise CommandError(
                "the relay loop needs PostgreSQL with OUTBOX_WAKEUP=auto or notify "
                "(on SQLite, or with OUTBOX_WAKEUP=celery, the Celery worker relays)"
            )
        outbox_settings_ensure_valid()
        waker = Waker()

        def stop(*_: object) -> None:
            # The running drain sends nothing more, writes back what was acknowledged and
            # releases its other claims; the wait is interrupted at once.
            relay_stop_request()
            waker.wake()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        def listening() -> None:
            # The ready line of process managers and tests: written once LISTEN has run.
            self.stdout.write("relay loop listening", ending="\n")
            self.stdout.flush()

        try:
            stats = relay_loop(poll_interval_s=poll_interval, waker=waker, on_listening=listening)
        finally:
            producer_close()
            waker.close()
        self.stdout.write(
            f"relay loop stopped: {stats.drains} drains, {stats.published} published, "
            f"{stats.notifications} notifications"
        )
