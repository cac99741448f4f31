"""The fault campaign: traffic through the real stack while a seeded controller kills and
restarts its parts, then an exact consistency check.

The stack: the API server, a Celery worker with beat (relay, gateway, reactions,
reconciliation), the relay loop on PostgreSQL (`manage.py relay_loop`) and `consume_events`, on
PostgreSQL and a Kafka broker of the campaign's own.
The controller injects, at moments drawn from the seed (the same seed gives the same schedule):

- `clock_skew`: the worker restarted with its clock off by a few seconds (tests/fault/skewed_clock.py),
  so the events it stamps disagree with the API server's clocks;
- `worker_kill`, `consumer_kill`: SIGKILL, then a restart (worker_kill: the relay loop too);
- `kafka_restart`: the broker stopped and started;
- `postgres_restart`: the PostgreSQL server of DATABASE_URL restarted (tests/fault/faults.py);
- `hot_key_backlog`: a product gets a deep backlog whose first row is held in backoff;
- `topic_recreate`: a topic deleted under traffic and created again; what it lost is requeued;
- `poison_records`: out-of-range and malformed records written straight onto the topics.

At the end everything is running again, the pipeline drains, and `simulate_traffic`'s
consistency check (products, the order ledger, payments) must find no difference, and every
injected poison record must be exactly one dead letter.

Used by tests/fault/test_campaign.py (small scale, in `make test`) and by `make chaos`:

    python -m tests.fault.campaign --actions 50000 --faults 20 --seed 7
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.fault.faults import hot_key_backlog, poison_records_inject, postgres_restart, topic_recreate
from tests.support.kafka import KafkaCluster, PrivateBroker, broker_kill, broker_kill_draw, campaign_kafka
from tests.support.ports import free_ports_outside_ephemeral_range
from tests.support.processes import ManagedProcess


def fault_kinds(*, brokers: int) -> tuple[str, ...]:
    """The kinds a campaign draws from: on a 3-node cluster, SIGKILL of a node too."""
    # clock_skew first: at CI scale the skew then covers most of the run.
    return (
        "clock_skew",
        "worker_kill",
        "consumer_kill",
        "kafka_restart",
        "postgres_restart",
        "hot_key_backlog",
        "topic_recreate",
        "poison_records",
    ) + (("broker_kill",) if brokers == 3 else ())


FAULT_KINDS = fault_kinds(brokers=int(os.environ.get("KAFKA_BROKERS", "1")))  # campaign_kafka's choice
CLOCK_SKEWS_S = (5.0, -3.0, 8.0)  # the worker's clock offset at each clock_skew fault, in turn


@dataclass
class CampaignReport:
    seed: int
    schedule: list[tuple[float, str]]
    faults: Counter = field(default_factory=Counter)
    simulation: dict = field(default_factory=dict)
    duplicates_absorbed: int = 0
    poison_injected: int = 0
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "seed": self.seed,
            "faults": sum(self.faults.values()),
            "faults_by_kind": dict(self.faults),
            "actions": self.simulation.get("actions", 0),
            "events": self.simulation.get("events_recorded", 0),
            "duplicates_absorbed": self.duplicates_absorbed,
            "dead_letters": self.simulation.get("dead_letters", 0),
            "poison_injected": self.poison_injected,
            "server_errors_during_faults": self.simulation.get("server_errors", 0),
            "differences": len(self.simulation.get("differences", ["not run"])),
            "drained": self.simulation.get("drained", False),
            "latency_ms": self.simulation.get("latency_ms"),
            "faults_log": self.notes,
        }

    def table(self) -> str:
        data = self.as_json()
        lines = ["== fault campaign ==", f"{'seed':<30}{self.seed}"]
        lines.extend(f"{'faults: ' + kind:<30}{self.faults.get(kind, 0)}" for kind in FAULT_KINDS)
        lines.extend(
            f"{key:<30}{data[key]}"
            for key in (
                "actions",
                "events",
                "duplicates_absorbed",
                "poison_injected",
                "dead_letters",
                "server_errors_during_faults",
                "differences",
            )
        )
        return "\n".join(lines)


def fault_schedule(*, seed: int, faults: int, duration_s: float, kinds: tuple[str, ...]) -> list[tuple[float, str]]:
    """Moments (seconds from the start) and kinds of the faults: a function of the seed alone."""
    rng = random.Random(seed)
    moments = sorted(rng.uniform(0.05 * duration_s, 0.9 * duration_s) for _ in range(faults))
    return [
        (round(moment, 2), kinds[index % len(kinds)] if index < len(kinds) else rng.choice(kinds))
        for index, moment in enumerate(moments)
    ]


def _postgresql(env: dict[str, str]) -> bool:
    return env.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


class Stack:
    """The processes of `make run`, each restartable, on the given environment."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, port: int) -> None:
        self.env, self.log_dir, self.port = env, log_dir, port
        self.processes: dict[str, ManagedProcess] = {}
        self.worker_clock_offset_s = 0.0  # kept across the worker's restarts

    def _make(self, name: str) -> ManagedProcess:
        python = sys.executable
        argv = {
            "server": [python, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "commerce",
                "worker",
                "--beat",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                "--purge",
                f"--schedule={self.log_dir / 'celerybeat-schedule'}",
            ],
            "consumer": [python, "manage.py", "consume_events", "--batch-size", "200"],
            "relay": [python, "manage.py", "relay_loop"],
        }[name]
        ready = {
            "server": "Quit the server",
            "worker": "ready.",
            "consumer": "consuming",
            "relay": "relay loop listening",
        }[name]
        env = self.env
        if name == "worker" and self.worker_clock_offset_s:
            argv = [python, "-m", "tests.fault.skewed_clock", *argv[2:]]
            env = dict(env, CLOCK_OFFSET_S=str(self.worker_clock_offset_s))
        return ManagedProcess(name=name, argv=argv, env=env, log_path=self.log_dir / f"{name}.log", ready_text=ready)

    def restart(self, name: str) -> None:
        self.processes[name].stop()
        self.start(name)

    def start(self, name: str) -> None:
        process = self._make(name)
        process.start(timeout=90)
        self.processes[name] = process

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()


def _records_on(bootstrap: str, topics: dict[str, str]) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","))
    try:
        partitions = [TopicPartition(t, p) for t in topics.values() for p in consumer.partitions_for_topic(t) or []]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def _node_roles(cluster: KafkaCluster, node: int, *, topics: dict[str, str], group: str) -> str:
    """What the node about to be killed is to the cluster: active controller, group coordinator,
    leader of which partitions (so the report shows the kills hit leaders, not only followers)."""
    from kafka.errors import KafkaError

    try:
        roles = ["active controller"] if cluster.controller() == node else []
        if cluster.group_coordinator(group) == node:
            roles.append("group coordinator")
        for stream, topic in sorted(topics.items()):
            led = sorted(p for p, leader in cluster.leaders(topic).items() if leader == node)
            if led:
                roles.append(f"leader of {stream} {','.join(map(str, led))}")
    except (KafkaError, KeyError, IndexError) as exc:
        return f"roles unknown: {exc!r}"
    return "; ".join(roles) or "follower only"


def _inject(
    kind: str,
    *,
    stack: Stack,
    broker: PrivateBroker | KafkaCluster,
    env: dict[str, str],
    topics: dict[str, str],
    report: CampaignReport,
    rng: random.Random,
    seed: int,
    moment: float,
) -> str:
    """Inject one fault; returns what it did, for the log."""
    if kind == "clock_skew":
        stack.worker_clock_offset_s = CLOCK_SKEWS_S[report.faults[kind] % len(CLOCK_SKEWS_S)]
        stack.restart("worker")
        return f"worker clock {stack.worker_clock_offset_s:+.0f} s"
    if kind in ("worker_kill", "consumer_kill"):
        # worker_kill takes both relays down: the Celery worker and, on PostgreSQL, the relay loop.
        names = [kind.removesuffix("_kill")] + (
            ["relay"] if kind == "worker_kill" and "relay" in stack.processes else []
        )
        for name in names:
            stack.kill(name)
        time.sleep(1)
        for name in names:
            stack.start(name)
        return " and ".join(names)
    if kind == "kafka_restart":
        broker.stop()
        time.sleep(3)
        broker.start()
        return ""
    if kind == "postgres_restart":
        return postgres_restart(env["DATABASE_URL"])
    if kind == "hot_key_backlog":
        from catalog.models import Product

        product_ids = list(Product.objects.order_by("id").values_list("id", flat=True))
        return hot_key_backlog(product_id=rng.choice(product_ids), events=600, hold_s=20)
    if kind == "topic_recreate":
        topic = topics[rng.choice(sorted(topics))]
        return topic_recreate(
            bootstrap=broker.bootstrap,
            topic=topic,
            group=env.get("BACKOFFICE_GROUP_ID", "backoffice"),
            replication_factor=min(3, getattr(broker, "brokers", 1)),
            claim_ttl_s=float(stack.env["OUTBOX_CLAIM_TTL"]),
        )
    if kind == "poison_records":
        injected = poison_records_inject(bootstrap=broker.bootstrap, topics=topics)
        report.poison_injected += injected
        return f"{injected} records"
    if kind == "broker_kill":
        if not isinstance(broker, KafkaCluster):  # a kind of the campaign only on the cluster
            raise ValueError("broker_kill needs the 3-node cluster (KAFKA_BROKERS=3)")
        node = broker_kill_draw(seed=seed, moment=moment, brokers=broker.brokers)
        roles = _node_roles(broker, node, topics=topics, group=env.get("BACKOFFICE_GROUP_ID", "backoffice"))
        broker_kill(broker, seed=seed, moment=moment)
        return f"node {node} ({roles})"
    raise ValueError(f"unknown fault kind {kind}")


def run_campaign(
    *,
    seed: int,
    actions: int,
    faults: int,
    env: dict[str, str],
    log_dir: Path,
    topics: dict[str, str],
    kinds: tuple[str, ...] = FAULT_KINDS,
    rate: float = 60.0,
    say=print,
) -> CampaignReport:
    """Run traffic and faults against a fresh stack; returns the report (differences must be 0)."""
    from django.core.management import call_command
    from django.db import connection

    from backoffice.models import InboxEntry

    duration_s = actions / rate
    report = CampaignReport(
        seed=seed, schedule=fault_schedule(seed=seed, faults=faults, duration_s=duration_s, kinds=kinds)
    )
    say(f"fault campaign: seed {seed}, {actions} actions at {rate}/s, schedule {report.schedule}")
    broker = campaign_kafka()
    try:
        broker.start()
        broker.topics_create(list(topics.values()) + [f"{t}.dlq" for t in topics.values()])
    except BaseException:
        broker.stop()  # a start that failed half-way leaves no broker running
        raise
    port = free_ports_outside_ephemeral_range(1)
    stack_env = dict(
        env,
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        PAYMENT_CALLBACK_BASE_URL=f"http://127.0.0.1:{port}",
        PAYMENT_SIM_FAILURE_RATE="0.2",
        PAYMENT_SIM_DELAY="0.2",
        PAYMENT_RECONCILE_AFTER="8",
        PAYMENT_RECONCILE_INTERVAL="3",
        # A charge the killed worker never finished stays "processing" at the
        # simulated gateway: reconciliation hands it to review instead of waiting an hour.
        PAYMENT_REVIEW_AFTER="20",
        OUTBOX_POLL_INTERVAL="1",
        OUTBOX_CLAIM_TTL="10",
        OUTBOX_BACKOFF_MAX="3",
        OUTBOX_KICK_ENABLED="1",
        DB_CONN_MAX_AGE="0",
    )
    stack = Stack(env=stack_env, log_dir=log_dir, port=port)
    simulation_output: dict = {}
    try:
        # As `make run` runs it: on PostgreSQL, the NOTIFY-woken relay loop beside the worker.
        names = (
            ("server", "worker", "relay", "consumer") if _postgresql(stack_env) else ("server", "worker", "consumer")
        )
        for name in names:
            stack.start(name)

        def simulate() -> None:
            import io

            out = io.StringIO()
            try:
                call_command(
                    "simulate_traffic",
                    "--base-url",
                    f"http://127.0.0.1:{port}",
                    "--actions",
                    str(actions),
                    "--rate",
                    str(rate),
                    "--users",
                    "4",
                    "--seed",
                    str(seed),
                    "--drain-timeout",
                    "240",
                    "--json",
                    "--tolerate-server-errors",
                    stdout=out,
                )
            except SystemExit:
                pass
            finally:
                connection.close()
            lines = out.getvalue().strip().splitlines()
            simulation_output["report"] = json.loads(lines[-1]) if lines else {}
            simulation_output["text"] = out.getvalue()

        simulation = threading.Thread(target=simulate, daemon=True)
        started = time.monotonic()
        simulation.start()
        rng = random.Random(seed)
        for moment, kind in report.schedule:
            delay = started + moment - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            note = _inject(
                kind,
                stack=stack,
                broker=broker,
                env=env,
                topics=topics,
                report=report,
                rng=rng,
                seed=seed,
                moment=moment,
            )
            say(f"  t={time.monotonic() - started:6.1f}s fault: {kind}{': ' + note if note else ''}")
            report.notes.append(f"{kind}: {note}" if note else kind)
            report.faults[kind] += 1
        # The traffic takes longer than actions / rate on a loaded machine; simulate_traffic
        # ends by itself (its drain has a timeout), so wait for it generously.
        simulation.join(timeout=4 * duration_s + 900)
        if simulation.is_alive():
            say("the simulation did not finish in time: no report")
        report.simulation = simulation_output.get("report", {})
        say(simulation_output.get("text", "")[-2500:])
        connection.close()
        # Every record on the topics beyond one per published event is a duplicate the relay
        # sent (a kill between ack and mark); the inbox absorbed each one.
        handled = InboxEntry.objects.filter(consumer_group=env.get("BACKOFFICE_GROUP_ID", "backoffice")).count()
        # (A recreated topic lost its old records, and poison records are no events: a floor.)
        report.duplicates_absorbed = max(0, _records_on(broker.bootstrap, topics) - handled - report.poison_injected)
    finally:
        stack.stop_all()
        broker.stop()
    say(report.table())
    return report


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actions", type=int, default=50_000)
    parser.add_argument("--faults", type=int, default=20)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--rate", type=float, default=80.0)
    options = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    # The campaign's database on the server of DATABASE_URL (the one postgres_restart restarts).
    server = urlsplit(os.environ.get("DATABASE_URL") or "postgres://commerce:commerce@127.0.0.1:5432/commerce")
    if server.scheme.startswith("postgres"):
        os.environ.setdefault("BENCH_DATABASE_URL", server._replace(path="/commerce_chaos").geturl())
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from common import django_setup  # the benchmarks' set-up: PostgreSQL, created and migrated

    django_setup()
    from django.conf import settings
    from django.core.management import call_command

    suffix = f"chaos-{options.seed}-{int(time.time())}"
    topics = {stream: f"{suffix}-{stream}" for stream in settings.KAFKA_TOPICS}
    group = f"{suffix}-backoffice"
    env = dict(
        os.environ,
        KAFKA_TOPIC_CATALOG=topics["catalog-events"],
        KAFKA_TOPIC_ORDERS=topics["order-events"],
        BACKOFFICE_GROUP_ID=group,
        DEBUG="1",
        PYTHONUNBUFFERED="1",
        OUTBOX_KICK_ENABLED="1",
    )
    settings.KAFKA_TOPICS, settings.BACKOFFICE_GROUP_ID = topics, group
    # The campaign's own database (never DATABASE_URL's) starts empty: a previous run stopped
    # half-way leaves source rows and projections that no event of this run will reconcile.
    call_command("flush", interactive=False, verbosity=0)
    call_command("seed_demo", "--stock", "1000000")
    log_dir = Path(__file__).resolve().parents[2] / "var" / "chaos" / suffix
    log_dir.mkdir(parents=True, exist_ok=True)
    report = run_campaign(
        seed=options.seed,
        actions=options.actions,
        faults=options.faults,
        env=env,
        log_dir=log_dir,
        topics=topics,
        rate=options.rate,
    )
    print(json.dumps(report.as_json()))
    result = report.as_json()
    sys.exit(
        0
        if result["differences"] == 0 and result["drained"] and result["dead_letters"] == result["poison_injected"]
        else 1
    )


if __name__ == "__main__":
    main()
