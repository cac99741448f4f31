"""Settings for the test suite: the project's settings with development defaults switched on.

Tests run with DEBUG on (dev secret key and callback secret) unless the environment says
otherwise; every service address still comes from the environment.
"""

from __future__ import annotations

import os

os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from commerce.settings import *  # noqa: E402,F403
