"""Production settings fail closed: with DEBUG off, a process without a real payment gateway or
with a missing or short callback secret refuses to run (system checks, errors), and
`check --deploy` passes with a proper production environment."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]


def _manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "commerce.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "api.example.com",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        text=True,
        check=False,
        capture_output=True,
        env={**base, **env},
        timeout=120,
    )


PRODUCTION = {
    "PAYMENT_GATEWAY": "tests.support.gateways.SilentGateway",
    "PAYMENT_CALLBACK_SECRET": secrets.token_urlsafe(40),
    "TRUSTED_PROXIES": "1",
}


def test_check_deploy_passes_with_a_proper_production_environment(tmp_path):
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "overrides,check_id",
    [
        ({"PAYMENT_GATEWAY": ""}, "payments.E001"),
        ({"PAYMENT_GATEWAY": "payments.nowhere.Gateway"}, "payments.E002"),
        ({"PAYMENT_GATEWAY": "payments.simulator.SimulatedGateway"}, "payments.E003"),
        ({"PAYMENT_CALLBACK_SECRET": ""}, "payments.E004"),
        ({"PAYMENT_CALLBACK_SECRET": "too-short-a-secret"}, "payments.E004"),
    ],
)
def test_production_without_a_real_gateway_or_secret_refuses_to_run(tmp_path, overrides, check_id):
    env = {key: value for key, value in {**PRODUCTION, **overrides}.items() if value}
    for command in (["check", "--deploy"], ["migrate", "--plan"]):
        result = _manage(tmp_path, *command, **env)
        assert result.returncode != 0, result.stdout
        assert check_id in result.stderr


def test_no_payment_default_outside_debug(tmp_path):
    code = (
        "import django;django.setup();from django.conf import settings;"
        "print(repr(settings.PAYMENT_GATEWAY), repr(settings.PAYMENT_CALLBACK_SECRET))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        text=True,
        check=False,
        capture_output=True,
        timeout=60,
        env={
            "PATH": os.environ["PATH"],
            "VAR_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "commerce.settings",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "'' ''"


def test_a_secret_key_is_required_outside_debug(tmp_path):
    result = _manage(tmp_path, "check", SECRET_KEY="", **PRODUCTION)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.parametrize("module", ["commerce.wsgi", "commerce.asgi"])
def test_a_wsgi_or_asgi_server_refuses_to_load_without_a_gateway(tmp_path, module):
    # gunicorn or uvicorn import the application without running the system checks
    env = {
        "PATH": os.environ["PATH"],
        "VAR_DIR": str(tmp_path),
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "api.example.com",
    }
    refused = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=PROJECT_DIR,
        text=True,
        check=False,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "payments.E001" in refused.stderr
    assert "payments.E004" in refused.stderr
    loaded = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=PROJECT_DIR,
        text=True,
        check=False,
        capture_output=True,
        env={**env, **PRODUCTION},
        timeout=60,
    )
    assert loaded.returncode == 0, loaded.stderr


@pytest.mark.parametrize(
    "variable,value",
    [
        ("OUTBOX_BATCH_SIZE", "abc"),
        # django-environ kept a float's digits only: "1h" was one second, "1,5" was 1.5
        ("PAYMENT_REVIEW_AFTER", "1h"),
        ("OUTBOX_CLAIM_TTL", "1,5"),
        ("PAYMENT_RECONCILE_AFTER", "nan"),
    ],
)
def test_a_setting_that_cannot_be_read_is_named_in_one_line_not_a_traceback(tmp_path, variable, value):
    # (make run's components and manage.py alike: a bare ValueError named no variable)
    result = _manage(tmp_path, "check", **{**PRODUCTION, variable: value})
    assert result.returncode != 0
    assert f"{variable}={value!r} cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "variable,value",
    [
        # DRF parses a rate at each request: every API call was a 500
        ("THROTTLE_USER", "abc"),
        ("THROTTLE_LOGIN", "10/fortnight"),
        # every callback refused as stale
        ("PAYMENT_CALLBACK_TOLERANCE", "-1"),
        # the hourly purge emptied the inbox: every redelivery applied again
        ("BACKOFFICE_INBOX_RETENTION_DAYS", "0"),
        ("BACKOFFICE_INBOX_RETENTION_DAYS", "-3"),
        # the purge's date overflowed at every run (1e6), the import failed with a traceback (1e9)
        ("BACKOFFICE_INBOX_RETENTION_DAYS", "1000000"),
        ("BACKOFFICE_INBOX_RETENTION_DAYS", "1000000000"),
        # the receipts' purge overflowed
        ("PAYMENT_CALLBACK_TOLERANCE", "1000000000000"),
        ("TRUSTED_PROXIES", "-1"),
    ],
)
def test_a_setting_out_of_its_range_is_refused_at_start(tmp_path, variable, value):
    result = _manage(tmp_path, "check", **{**PRODUCTION, variable: value})
    assert result.returncode != 0
    assert f"{variable}=" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_without_trusted_proxies_said_is_warned(tmp_path):
    # Behind a proxy the default (0) makes every client the proxy: one rate-limit bucket.
    unset = {key: value for key, value in PRODUCTION.items() if key != "TRUSTED_PROXIES"}
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **unset)
    assert result.returncode != 0
    assert "commerce.W002" in result.stderr + result.stdout
    # said, even as 0 (no proxy), it is not
    said = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **{**unset, "TRUSTED_PROXIES": "0"})
    assert said.returncode == 0, said.stderr
