"""A real Prometheus (Debian's `prometheus` package) for tests: scrapes given targets every
second with the project's alert rules loaded, and answers PromQL through its HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.conftest import PROJECT_DIR
from tests.support.processes import ManagedProcess

RULES = PROJECT_DIR / "deploy" / "prometheus" / "alerts.yml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrometheusServer:
    def __init__(self, *, targets: dict[str, str], workdir: Path) -> None:
        """`targets`: job name -> host:port (scraped at /metrics every second)."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: scripts/promtool-check installs it")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(RULES, workdir / "alerts.yml")
        jobs = "\n".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']"
            for job, target in targets.items()
        )
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - alerts.yml\nscrape_configs:\n" + jobs + "\n"
        )
        self.process = ManagedProcess(
            name="prometheus",
            argv=[
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            env={"PATH": "/usr/bin:/bin"},
            log_path=workdir / "prometheus.log",
            ready_text="Server is ready to receive web requests.",
        )

    def start(self) -> None:
        self.process.start(timeout=60)

    def stop(self) -> None:
        self.process.stop()

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def values(self, query: str) -> list[float]:
        """The instant vector's values (one per series), [] when the query has no series."""
        return [float(sample["value"][1]) for sample in self.api("query", query=query)["result"]]

    def wait_for(self, query: str, predicate, *, timeout: float = 60.0) -> list[float]:
        """Polls `query` until `predicate(values)`; returns the values, or fails with the last."""
        deadline = time.monotonic() + timeout
        values: list[float] = []
        while time.monotonic() < deadline:
            values = self.values(query)
            if predicate(values):
                return values
            time.sleep(0.5)
        raise AssertionError(f"{query} never satisfied the condition; last values {values}")
