"""make run's status line and environment, without a stack."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from run.environment import namespace_default, run_environment
from run.status import is_ready, readiness


class _ErrorPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!DOCTYPE html>\n<html><body><h1>Server Error (500)</h1>\n</body></html>\n"
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_readiness_answer_that_is_not_json_is_one_readable_line() -> None:
    # given a server answering 500 with Django's HTML error page (an empty SECRET_KEY did that)
    server = HTTPServer(("127.0.0.1", 0), _ErrorPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # when
        line = readiness(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    # then
    assert "\n" not in line
    assert line.startswith("server: HTTP 500 from /readyz, not a readiness answer")
    assert "var/log/server.log" in line


@pytest.mark.django_db
def test_the_status_line_reads_the_servers_real_readyz_answers(client) -> None:
    # given what commerce.health.readyz answers, ready and not (the cache down)
    from unittest import mock

    ready_body = client.get("/readyz").content
    down_body = b'{"status": "unavailable", "failing": ["cache"]}'

    class _Answer(BaseHTTPRequestHandler):
        body = ready_body

        def do_GET(self) -> None:
            self.send_response(200 if self.body == ready_body else 503)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # when
        ready_line = readiness(f"http://127.0.0.1:{server.server_port}")
        with mock.patch.object(_Answer, "body", down_body):
            down_line = readiness(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    # then
    assert ready_line == "database=ok cache=ok"
    assert is_ready(ready_line)
    assert down_line == "database=ok cache=DOWN"
    assert not is_ready(down_line)


def test_a_server_that_does_not_answer_is_one_line() -> None:
    line = readiness("http://127.0.0.1:9")
    assert line.startswith("server: not answering")
    assert "\n" not in line


def test_two_checkouts_get_their_own_topics_and_consumer_group(tmp_path: Path) -> None:
    first, second = tmp_path / "shop", tmp_path / "other" / "shop"
    for checkout in (first, second):
        checkout.mkdir(parents=True)
    env_first, env_second = run_environment({}, first), run_environment({}, second)
    for key in ("KAFKA_TOPIC_CATALOG", "KAFKA_TOPIC_ORDERS", "BACKOFFICE_GROUP_ID"):
        assert env_first[key] != env_second[key]
        assert env_first[key].startswith(namespace_default(first))
    assert env_first["DEBUG"] == "1"


def test_what_the_environment_or_env_file_sets_wins_and_an_empty_value_means_default(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KAFKA_TOPIC_ORDERS=my-orders\nBACKOFFICE_GROUP_ID=\n# DEBUG=off\n")
    env = run_environment({"RUN_NAMESPACE": "demo", "RUN_PORT": "8123"}, tmp_path)
    assert "KAFKA_TOPIC_ORDERS" not in env  # .env names it: settings read it from there
    assert env["BACKOFFICE_GROUP_ID"] == "demo.backoffice"
    assert env["KAFKA_TOPIC_CATALOG"] == "demo.catalog-events"
    assert env["PAYMENT_CALLBACK_BASE_URL"] == "http://127.0.0.1:8123"
    assert env["DEBUG"] == "1"
