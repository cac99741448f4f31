"""
WSGI config for commerce project.

It exposes the WSGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/wsgi/
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "commerce.settings")

application = get_wsgi_application()

# A server loads this module without running Django's system checks: run ours here, so that a
# production process with no payment gateway or callback secret refuses to start (commerce/checks.py).
from commerce.checks import fail_closed  # noqa: E402 - after get_*_application(): Django is set up

fail_closed()
