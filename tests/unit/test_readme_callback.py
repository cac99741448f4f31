"""README's callback example signs with the secret a development server really has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_the_readme_signs_callbacks_with_the_development_default_secret(tmp_path):
    readme = (PROJECT_DIR / "README.md").read_text()
    signing = re.search(r"openssl dgst -sha256 -hmac (\S+)", readme)
    assert signing is not None, "README's callback example is gone"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "commerce.settings",
        "DEBUG": "1",
    }
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.PAYMENT_CALLBACK_SECRET)",
        ],
        cwd=tmp_path,  # no .env of the checkout read
        env={**env, "PYTHONPATH": str(PROJECT_DIR)},
        text=True,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert signing.group(1) == shown.stdout.strip()
    # and the prose next to it names the same one
    assert f"default\n`{signing.group(1)}`" in readme or f"default `{signing.group(1)}`" in readme
