"""Operations commands outside `make run`: a missing setting is one line, make run's environment works.

A copy of the checkout without .env, and an environment without DEBUG or SECRET_KEY: what an
operator's shell has.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.local_stack import project_copy

COMMANDS = [["outbox", "status"], ["deadletters", "redrive", "--all"]]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return project_copy(tmp_path_factory.mktemp("checkout"))


def _run(checkout: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=checkout, env=env, check=False, capture_output=True, text=True, timeout=300
    )


def _bare_environment() -> dict[str, str]:
    import os

    return {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_setting_is_one_line_naming_it_and_where_to_set_it(checkout, command):
    # when
    result = _run(checkout, ["manage.py", *command], _bare_environment())
    # then
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("manage.py: SECRET_KEY is not set")
    assert ".env" in lines[0]
    assert "docs/OPERATIONS.md" in lines[0]


def test_the_commands_run_with_the_environment_make_run_prints(checkout):
    # given make run's environment, as docs/OPERATIONS.md shows it
    printed = _run(checkout, ["scripts/run_local.py", "--env"], _bare_environment())
    assert printed.returncode == 0, printed.stderr
    env = _bare_environment()
    for line in printed.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    assert env["DEBUG"] == "1"
    assert _run(checkout, ["manage.py", "migrate", "-v", "0"], env).returncode == 0
    # when / then
    for command in COMMANDS:
        result = _run(checkout, ["manage.py", *command], env)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
