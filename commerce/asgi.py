"""
ASGI config for commerce project.

It exposes the ASGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/asgi/
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "commerce.settings")

application = get_asgi_application()

# A server loads this module without running Django's system checks: run ours here, so that a
# production process with no payment gateway or callback secret refuses to start (commerce/checks.py).
from commerce.checks import fail_closed  # noqa: E402 - after get_*_application(): Django is set up

fail_closed()
