"""Management commands refuse bad arguments with one clear line, before touching Kafka.

Called programmatically, an argparse error and a `CommandError` from `handle()` both raise
`CommandError`; the subprocess tests check what an operator sees: an exit code, no traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from backoffice.management.commands import consume_events, rebuild_projections
from backoffice.models import DeadLetter
from catalog.models import Product
from outbox.management.commands import ensure_topics

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _not_reached(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a bad argument reached Kafka or the database")


class _ConsumerStub:
    """Stands in for EventConsumer: records its arguments, consumes nothing."""

    created: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.created.append(kwargs)
        self.topics = kwargs["topics"]
        self.group_id = kwargs["group_id"]

    def install_signal_handlers(self) -> None:
        pass

    def run(self, **kwargs: Any) -> Any:
        self.created[-1]["run"] = kwargs
        return _Stats()

    def close(self) -> None:
        pass


class _Stats:
    polled = applied = duplicates = dead_lettered = retries = 0


@pytest.fixture
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consume_events, "EventConsumer", _not_reached)
    monkeypatch.setattr(rebuild_projections, "EventConsumer", _not_reached)
    monkeypatch.setattr(rebuild_projections, "projections_reset", _not_reached)
    monkeypatch.setattr(ensure_topics, "topics_ensure", _not_reached)


def _letter() -> DeadLetter:
    return DeadLetter.objects.create(consumer_group="g", topic="t", partition=0, offset=0, error="boom")


# --- deadletters -----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["99999999999999999999999", "-1", "0", "seven"])
def test_deadletters_redrive_refuses_an_id_that_cannot_be_one(bad: str) -> None:
    with pytest.raises(CommandError, match="argument ids"):
        call_command("deadletters", "redrive", "--", bad)


@pytest.mark.django_db
def test_deadletters_redrive_names_the_ids_not_found_and_redrives_nothing() -> None:
    # given an open letter
    letter = _letter()
    # when it is redriven along with two ids no letter has
    with pytest.raises(CommandError, match=r"no dead letter with id 999998, 999999"):
        call_command("deadletters", "redrive", str(letter.id), "999999", "999998")
    # then nothing was redriven
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.OPEN


# --- outbox ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_outbox_requeue_refuses_an_id_that_is_not_a_uuid() -> None:
    with pytest.raises(CommandError, match="'not-a-uuid' is not a UUID"):
        call_command("outbox", "requeue", "not-a-uuid")


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["-5", "nan", "inf", "soon"])
def test_outbox_status_refuses_a_max_age_that_is_not_a_finite_number_from_0(bad: str) -> None:
    with pytest.raises(CommandError, match="argument --max-age"):
        call_command("outbox", "status", f"--max-age={bad}")


# --- consume_events, rebuild_projections -----------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        ["--batch-size", "-5"],
        ["--batch-size", "0"],
        ["--batch-size", "99999999999999999999"],
        ["--topics", ""],
        ["--topics", "bad topic!"],
        ["--topics", "orders", ".."],
        ["--group", ""],
        ["--group", "  "],
        ["--until-idle", "nan"],
        ["--until-idle", "-1"],
        ["--until-idle", "inf"],
        ["--max-events", "0"],
        ["--progress-every", "0"],
        ["--from-beginning", "--from-latest"],
        ["--from-latest", "--from-beginning"],
    ],
)
def test_consume_events_refuses_bad_arguments_before_connecting(no_kafka: None, bad: list[str]) -> None:
    with pytest.raises(CommandError, match="argument --"):
        call_command("consume_events", *bad)


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], {"batch_size": None, "from_beginning": True}),
        (["--from-beginning"], {"from_beginning": True}),
        (["--from-latest"], {"from_beginning": False}),
        (
            ["--batch-size", "100", "--topics", "a.b", "c_d-1", "--group", "g"],
            {"batch_size": 100, "topics": ["a.b", "c_d-1"], "group_id": "g"},
        ),
    ],
)
@pytest.mark.django_db  # the command first checks whose effects the projections hold
def test_consume_events_passes_good_arguments_on(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: dict[str, Any]
) -> None:
    _ConsumerStub.created = []
    monkeypatch.setattr(consume_events, "EventConsumer", _ConsumerStub)
    call_command("consume_events", *argv, "--until-idle", "0")
    (created,) = _ConsumerStub.created
    assert {name: created[name] for name in expected} == expected
    assert created["run"]["until_idle_s"] == 0.0


@pytest.mark.parametrize("bad", [["--until-idle", "nan"], ["--until-idle", "-2"], ["--group", ""]])
def test_rebuild_projections_refuses_bad_arguments_before_emptying_anything(no_kafka: None, bad: list[str]) -> None:
    with pytest.raises(CommandError, match="argument --"):
        call_command("rebuild_projections", *bad)


# --- ensure_topics, seed_demo, asyncapi ------------------------------------------------------


@pytest.mark.parametrize("bad", ["0", "-3", "99999999999999999999", "three"])
def test_ensure_topics_refuses_a_partition_count_below_1(no_kafka: None, bad: str) -> None:
    with pytest.raises(CommandError, match="argument --partitions"):
        call_command("ensure_topics", f"--partitions={bad}")


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["-1", "99999999999999999999"])
def test_seed_demo_refuses_a_stock_out_of_range_and_writes_nothing(bad: str) -> None:
    with pytest.raises(CommandError, match="argument --stock"):
        call_command("seed_demo", f"--stock={bad}")
    assert not Product.objects.exists()


def test_asyncapi_names_an_output_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"/nonexistent/dir/x\.yaml"):
        call_command("asyncapi", "--output", "/nonexistent/dir/x.yaml")
    with pytest.raises(CommandError, match=re.escape(str(tmp_path))):
        call_command("asyncapi", "--output", str(tmp_path))  # a directory


# --- what the operator sees ------------------------------------------------------------------


def _manage(*argv: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", DATABASE_URL=f"sqlite:///{tmp_path / 'db'}")
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )


def test_a_command_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = _manage("asyncapi", "--output", "/nonexistent/dir/x.yaml", tmp_path=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "CommandError: cannot write /nonexistent/dir/x.yaml: No such file or directory"
    ]


def test_an_argument_error_is_a_usage_error_and_exit_2_without_connecting(tmp_path: Path) -> None:
    done = _manage("consume_events", "--batch-size", "0", tmp_path=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("error: argument --batch-size: 0 is out of range: it must be from 1 to 2147483647")
    )
