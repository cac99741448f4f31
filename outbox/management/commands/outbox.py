from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from commerce.management.arguments import moment, seconds, topic_name, uuid_text
from outbox.housekeeping import outbox_purge_published, outbox_republish, outbox_requeue, outbox_status
from outbox.models import OutboxEvent
from outbox.relay import relay_drain
from outbox.relay.stopping import relay_stop_request, relay_stop_requested
from outbox.topics import topics_check_report


class Command(BaseCommand):
    help = (
        "Outbox operations: `status` (exit 1 when the oldest pending row is older than "
        "--max-age; with --topics, also on a topic that differs from the replication policy), "
        "`requeue` (dead rows back to pending), `republish` (a topic's published rows sent again, "
        "after it was deleted by mistake), `drain` (publish now), `purge`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        status = sub.add_parser("status")
        status.add_argument(
            "--max-age",
            type=seconds(zero_allowed=True),
            default=None,
            help="seconds; exit 1 when the oldest pending row is older (default OUTBOX_STALE_SECONDS)",
        )
        status.add_argument("--json", action="store_true")
        status.add_argument(
            "--topics",
            action="store_true",
            help="also compare the topics on Kafka with the replication policy "
            "(outbox/topics.py); exit 1 on a mismatch or when Kafka cannot tell",
        )
        requeue = sub.add_parser("requeue")
        requeue.add_argument("event_ids", nargs="*", type=uuid_text, help="event ids; none means every dead row")
        requeue.add_argument("--all", action="store_true")
        republish = sub.add_parser("republish")
        republish.add_argument("--topic", required=True, type=topic_name, help="the Kafka topic to send again")
        republish.add_argument(
            "--since",
            type=moment,
            default=None,
            help="only rows published at or after this ISO 8601 time (default: every one still kept, "
            "OUTBOX_RETENTION_DAYS). It waits for the relays' leases up to OUTBOX_CLAIM_TTL: run it "
            "with the relays' value",
        )
        drain = sub.add_parser("drain")
        drain.add_argument("--until-empty", action="store_true")
        sub.add_parser("purge")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "status":
            max_age = options["max_age"]
            self._status(
                settings.OUTBOX_STALE_SECONDS if max_age is None else max_age,
                options["json"],
                check_topics=options["topics"],
            )
        elif action == "requeue":
            if not options["event_ids"] and not options["all"]:
                raise CommandError("name event ids, or pass --all")
            count = outbox_requeue(event_ids=options["event_ids"] or None)
            self.stdout.write(f"requeued {count} dead row(s)")
        elif action == "republish":
            self._republish(topic=options["topic"], since=options["since"])
        elif action == "drain":
            self._drain(until_empty=options["until_empty"])
        elif action == "purge":
            self.stdout.write(f"deleted {outbox_purge_published()} published row(s)")

    def _republish(self, *, topic: str, since: Any) -> None:
        topics = sorted(set(settings.KAFKA_TOPICS.values()))
        if topic not in topics:
            raise CommandError(f"{topic!r} is not a topic of the outbox (KAFKA_TOPICS: {', '.join(topics)})")
        said: list[int] = []

        def waiting(rows: int, seconds_left: float) -> None:
            if rows not in said:  # a line when the count changes, not every 0.2 s
                said.append(rows)
                self.stdout.write(
                    f"waiting for {rows} leased row(s) of {topic} to be written back (at most {seconds_left:.0f} s)"
                )

        republished = outbox_republish(topic=topic, since=since, on_wait=waiting)
        self.stdout.write(
            f"republished {republished.rows} row(s) of {topic}: pending again, the relay sends them "
            "(consumers skip what they had applied)"
        )
        if republished.still_leased:
            started = republished.started_at.isoformat()
            self.stderr.write(
                f"{republished.still_leased} row(s) of {topic} leased before this were not written back "
                f"within OUTBOX_CLAIM_TTL: a relay paused past its lease may still mark them published. "
                f"Once `outbox status` shows the topic settled, run: outbox republish --topic {topic} --since {started}"
            )
            sys.exit(1)

    def _drain(self, *, until_empty: bool) -> None:
        """One drain; with `until_empty`, drains until no due row is pending.

        A drain that finds nothing to claim while due rows are pending has met rows of keys that
        another relay holds: it waits while the backlog shrinks, and gives up once nothing has
        moved for OUTBOX_CLAIM_TTL (a key held back by a dead row, say). A failed send ends it:
        the rows are in backoff.
        """
        # SIGTERM (a deploy, a supervisor) stops the drain gracefully: what was acknowledged is
        # written back, every other claim is released at once.
        signal.signal(signal.SIGTERM, lambda *_: relay_stop_request())
        total = 0
        backlog, stalled_since = None, None
        while not relay_stop_requested():
            result = relay_drain()
            total += result.published
            if result.batches:
                self.stdout.write(json.dumps(result.as_dict()))
            if not until_empty or result.failed_not_held:
                break
            if result.held and not result.published:
                # What is left is a missing topic's rows: they wait in backoff for the topic.
                self.stderr.write(f"{result.held} row(s) wait for a topic missing from the cluster: stopping")
                break
            if result.batches:
                backlog, stalled_since = None, None
                continue
            due = OutboxEvent.objects.filter(
                status=OutboxEvent.Status.PENDING, available_at__lte=timezone.now()
            ).count()
            if due == 0:
                break
            if backlog is None or due < backlog:
                backlog, stalled_since = due, time.monotonic()
            elif stalled_since is not None and time.monotonic() - stalled_since > settings.OUTBOX_CLAIM_TTL:
                self.stderr.write(
                    f"{due} due row(s) pending, none claimable for {settings.OUTBOX_CLAIM_TTL:.0f} s: stopping"
                )
                break
            time.sleep(0.1)
        self.stdout.write(f"published {total}")

    def _status(self, max_age: float, as_json: bool, *, check_topics: bool = False) -> None:
        now = timezone.now()
        rows = outbox_status()
        # The topics as Kafka has them against the replication policy (outbox/topics.py), on
        # request only: without it the check stays a database query, fast and Kafka-free.
        mismatches, check_error = topics_check_report() if check_topics else ([], None)
        oldest = max((row.oldest_pending_age_s(now) or 0.0 for row in rows), default=0.0)
        if as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "topics": [
                            {
                                "topic": r.topic,
                                "pending": r.pending,
                                "dead": r.dead,
                                "oldest_pending_age_s": r.oldest_pending_age_s(now),
                                "published_last_minute": r.published_last_minute,
                            }
                            for r in rows
                        ],
                        "oldest_pending_age_s": oldest,
                        **(
                            {"topic_mismatches": [str(m) for m in mismatches], "topic_check_error": check_error}
                            if check_topics
                            else {}
                        ),
                    }
                )
            )
        else:
            self.stdout.write(f"{'topic':<40} {'pending':>8} {'dead':>6} {'oldest(s)':>10} {'pub/1m':>8}")
            for r in rows:
                age = r.oldest_pending_age_s(now)
                self.stdout.write(
                    f"{r.topic:<40} {r.pending:>8} {r.dead:>6} "
                    f"{(f'{age:.1f}' if age is not None else '-'):>10} "
                    f"{r.published_last_minute:>8}"
                )
            if check_error:
                self.stdout.write(f"topic check: {check_error}")
            for mismatch in mismatches:
                self.stdout.write(f"topic mismatch: {mismatch}")
        if oldest > max_age:
            self.stderr.write(f"oldest pending row is {oldest:.1f} s old (> {max_age} s)")
            sys.exit(1)
        if mismatches or check_error:
            self.stderr.write(check_error or f"{len(mismatches)} topic mismatch(es)")  # one or the other
            sys.exit(1)
