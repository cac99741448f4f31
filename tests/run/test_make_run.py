"""`make run` for real, as a newcomer meets it: a copy of the checkout with .env copied from
.env.example, on make run's defaults (SQLite, the file queue) and the broker of
KAFKA_BOOTSTRAP_SERVERS; components killed for real; a second stack on the same broker.

The tests of this module share the stack and run in order; the last one stops it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import time

import pytest

from run.supervisor import group_alive
from tests.support.local_stack import READY, LocalStack, processes_in, project_copy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

COMPONENTS = ["server", "worker", "relay", "beat", "consumer"]


def _own_names(output: str) -> tuple[str, ...]:
    found = re.search(r"topics (\S+), (\S+); consumer group (\S+)", output)
    assert found, output
    return found.groups()


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    checkout = project_copy(tmp_path_factory.mktemp("newcomer"))
    shutil.copy(checkout / ".env.example", checkout / ".env")
    started: dict[str, LocalStack] = {"newcomer": LocalStack(checkout)}
    started["newcomer"].start()
    yield started
    # Whatever a failed test left running: every process working in a copied checkout.
    for stack in started.values():
        if stack.popen is not None and stack.popen.poll() is None:
            os.killpg(stack.popen.pid, signal.SIGKILL)
        for line in processes_in(stack.project_dir):
            with contextlib.suppress(ProcessLookupError):  # gone by itself meanwhile
                os.kill(int(line.split()[0]), signal.SIGKILL)


def _remember(stack: LocalStack) -> dict:
    return stack.state()


def _settled(stack: LocalStack, payment_id: int) -> tuple | None:
    with stack.database() as db:
        row = db.execute(
            "SELECT p.status, p.failure_reason, o.status FROM payments_payment p "
            "JOIN orders_order o ON o.id = p.order_id WHERE p.id = ?",
            (payment_id,),
        ).fetchone()
    return row if row and row[2] != "PENDING_PAYMENT" else None


def test_env_example_copied_to_env_runs_and_a_payment_confirms_its_order(stacks):
    stack = stacks["newcomer"]
    _remember(stack)
    output = stack.output()
    assert READY in output
    # said once, in words, right after the first ready status line
    stack.wait_for(lambda: "make run: ready: the API answers at http://" in stack.output(), timeout=10, what="ready")
    assert stack.output().count("make run: ready:") == 1
    assert "Traceback" not in output
    assert "to an empty value" not in output  # .env.example sets nothing
    token = stack.token("alice")

    # when an order is placed and paid through the API
    status, order = stack.api("POST", "/api/orders/", {"lines": [{"product_id": 1, "quantity": 1}]}, token=token)
    assert status == 201, order
    status, payment = stack.api("POST", "/api/payments/", {"order_id": order["id"], "card_type": "VISA"}, token=token)
    assert status in (200, 201, 202), payment

    # then the gateway's signed callback is accepted (the development secret applies) and the
    # order follows at once, not after the 30 s reconciliation
    deadline = time.monotonic() + 20
    while (row := _settled(stack, payment["id"])) is None:
        assert time.monotonic() < deadline, "the order did not follow its payment in 20 s"
        time.sleep(0.2)
    payment_status, reason, order_status = row
    assert (payment_status, order_status) in {("COMPLETED", "CONFIRMED"), ("FAILED", "CANCELLED")}
    assert reason != "gateway timeout"


@pytest.mark.parametrize("name", COMPONENTS)
def test_a_killed_component_is_restarted_and_leaves_nothing_behind(stacks, name):
    stack = stacks["newcomer"]
    before = _remember(stack)["components"][name]
    old_pid = before["pid"]

    # when its main process is SIGKILLed (its children, a worker's pool, are left orphaned)
    os.kill(old_pid, signal.SIGKILL)

    # then make run restarts it, counts it, says so, and the old process group is gone
    def restarted() -> bool:
        now = _remember(stack)["components"][name]
        return now["restarts"] == before["restarts"] + 1 and now["state"] == "up" and now["pid"] != old_pid

    stack.wait_for(restarted, timeout=30, what=f"{name} restarted")
    assert not group_alive(old_pid)
    assert re.search(
        rf"{name} exited with signal SIGKILL; restarting now \(restart {before['restarts'] + 1}", stack.output()
    )
    stack.wait_for(
        lambda: (
            f"{name}=up(restarts {before['restarts'] + 1})" in stack.output().splitlines()[-1]
            and READY in stack.output().splitlines()[-1]
        ),
        timeout=60,
        what=f"a ready status line counting {name}'s restart",
    )


def test_a_second_stack_on_the_same_broker_gets_none_of_the_first_stacks_events(stacks, tmp_path_factory):
    first = stacks["newcomer"]
    second = stacks["second"] = LocalStack(project_copy(tmp_path_factory.mktemp("second-checkout")))
    second.start()

    # when both publish (seed_demo's products) and the first gets an order too
    token = first.token("bob")
    status, _ = first.api("POST", "/api/orders/", {"lines": [{"product_id": 2, "quantity": 1}]}, token=token)
    assert status == 201

    # then each back office handles all of its own events and none of the other's
    def own_events(stack: LocalStack) -> tuple[set[str], set[str]]:
        with stack.database() as db:
            published = {r[0] for r in db.execute("SELECT id FROM outbox_outboxevent WHERE status = 'published'")}
            handled = {r[0] for r in db.execute("SELECT event_id FROM backoffice_inboxentry")}
        return published, handled

    def all_own_handled(stack: LocalStack) -> bool:
        published, handled = own_events(stack)
        return bool(published) and published <= handled

    for stack in (first, second):
        stack.wait_for(
            lambda s=stack: all_own_handled(s), timeout=60, what="every published event handled by its own back office"
        )
    (published_1, handled_1), (published_2, handled_2) = own_events(first), own_events(second)
    assert handled_1.isdisjoint(published_2)
    assert handled_2.isdisjoint(published_1)

    # each says which broker it uses and whether it started it, and names its own topics
    names = [_own_names(stack.output()) for stack in (first, second)]
    assert set(names[0]).isdisjoint(names[1])
    for stack in (first, second):
        assert "Kafka: using the broker that answers at" in stack.output()


def test_ctrl_c_stops_every_process_it_started(stacks):
    for stack in stacks.values():
        groups = [c["pid"] for c in _remember(stack)["components"].values()]
        # when
        assert stack.stop(signal.SIGINT) == 0
        # then
        assert [pgid for pgid in groups if group_alive(pgid)] == []
        assert processes_in(stack.project_dir) == []
        assert "make run: stopped" in stack.output()
