"""`make run` refuses a setting it cannot run with before it starts anything, in one line that
says why: a port that is not one, a port another process listens on, a broker that neither
answers nor can be started. Before, RUN_PORT=99999 and a taken port started the whole stack and
left the server dying in a loop; a .env's KAFKA_BOOTSTRAP_SERVERS was used by the components but
not by the broker check, which started a local broker elsewhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from run.environment import address_taken, kafka_bootstrap, run_address

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _make_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return subprocess.run(
        [sys.executable, "scripts/run_local.py"],
        cwd=PROJECT_DIR,
        env={**base, "VAR_DIR": str(tmp_path), **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("port", ["99999", "0", "abc", "80a", "٨٠٠٠"])
def test_a_run_port_that_is_not_a_port_is_refused_naming_it(tmp_path, port):
    with pytest.raises(ValueError, match="RUN_PORT must be a port number from 1 to 65535"):
        run_address({"RUN_PORT": port}, {})
    # and make run stops there, without starting a broker or anything else
    result = _make_run(tmp_path, RUN_PORT=port)
    assert result.returncode == 2
    assert f"make run: RUN_PORT must be a port number from 1 to 65535, not {port!r}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "Kafka" not in result.stdout


def test_a_port_another_process_listens_on_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert address_taken("127.0.0.1", port) is not None
        result = _make_run(tmp_path, RUN_PORT=str(port))
    assert result.returncode == 2
    assert f"the API server cannot listen: 127.0.0.1:{port} is taken by another process" in result.stdout
    assert "Kafka" not in result.stdout
    assert address_taken("127.0.0.1", port) is None  # free once the other process is gone


def test_the_address_is_probed_as_runserver_binds_it():
    # a bracketed host is IPv6 (runserver's form: "[::1]:8000"); any other is IPv4
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert address_taken("localhost", port) is not None  # even where localhost is ::1 first
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as free:
                free.bind(("::1", 0))
                port6 = free.getsockname()[1]
        except OSError:
            return  # no IPv6 loopback on this machine
        assert address_taken("[::1]", port6) is None
    assert address_taken("no-such-host.invalid", 8000) is not None


def test_the_broker_is_the_one_the_components_read_from_the_environment_or_dotenv():
    assert kafka_bootstrap({}, {}) == "127.0.0.1:9092"
    assert kafka_bootstrap({}, {"KAFKA_BOOTSTRAP_SERVERS": "10.0.0.5:9092"}) == "10.0.0.5:9092"
    assert kafka_bootstrap({"KAFKA_BOOTSTRAP_SERVERS": "k:1"}, {"KAFKA_BOOTSTRAP_SERVERS": "10.0.0.5:9092"}) == "k:1"


def test_a_broker_that_cannot_be_started_is_refused_with_kafka_locals_own_reason(tmp_path, monkeypatch):
    # given a kafka-local that cannot start a broker there (its output was captured and dropped:
    # make run showed a CalledProcessError traceback)
    import run_local

    fake = tmp_path / "kafka-local"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "kafka-local: $1 at $KAFKA_BOOTSTRAP_SERVERS" >&2\n'
        'if [ "$1" = start ]; then echo "Socket server failed to bind: Unresolved address" >&2; exit 1; fi\n'
        "exit 3\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(run_local, "KAFKA_LOCAL", str(fake))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "nonsense.invalid:1")
    # when / then: one message with kafka-local's own reason, and kafka-local was given the broker
    with pytest.raises(run_local.StackNotReady) as refused:
        run_local.kafka_prepare()
    message = str(refused.value)
    assert message.startswith("no Kafka broker answers at nonsense.invalid:1 and the local one did not start there")
    assert "kafka-local: start at nonsense.invalid:1" in message
    assert "Socket server failed to bind: Unresolved address" in message
