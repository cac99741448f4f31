#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import re
import sys


def main() -> None:
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "commerce.settings")
    try:
        from django.core.exceptions import ImproperlyConfigured
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        raise ImportError(
            "Couldn't import Django. Are you sure it's installed and "
            "available on your PYTHONPATH environment variable? Did you "
            "forget to activate a virtual environment?"
        ) from exc
    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A missing setting is the operator's to fix: one line naming it, not a traceback.
        sys.exit(f"manage.py: {setting_missing_message(exc)}")


def setting_missing_message(exc: Exception) -> str:
    match = re.search(r"Set the (\w+) environment variable", str(exc))
    if match is None:
        return f"improperly configured: {exc}"
    name = match.group(1)
    return (
        f"{name} is not set. Set it in the environment or in .env (see .env.example); "
        f'for local development, `eval "$(python scripts/run_local.py --env)"` gives make '
        f"run's environment (docs/OPERATIONS.md)"
    )


if __name__ == "__main__":
    main()
