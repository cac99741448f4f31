"""Settings for the test suite: the project's settings with development defaults switched on.

Tests run with DEBUG on (dev secret key and callback secret) unless the environment says
otherwise; every service address still comes from the environment.

The benchmarks use these settings with DEBUG off (production-like timings) and the simulated
gateway on purpose, and the test runner turns DEBUG off in the test process: these settings
silence the two checks that refuse the simulator and a short secret outside DEBUG.
The API's rate limits are raised so that neither the suite nor the load tools that drive a
server started with these settings (fault campaign, e2e simulation) are throttled by accident;
the throttle tests set the rates they test.
"""

from __future__ import annotations

import os

os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("PAYMENT_GATEWAY", "payments.simulator.SimulatedGateway")
os.environ.setdefault("THROTTLE_ANON", "1000000/min")
os.environ.setdefault("THROTTLE_USER", "1000000/min")
os.environ.setdefault("THROTTLE_LOGIN", "1000000/min")

from commerce.settings import *  # noqa: F403 - all the project's settings, under the defaults above

# The simulator on purpose: the benchmarks run with DEBUG off, and the test runner turns DEBUG
# off inside the test process too.
SILENCED_SYSTEM_CHECKS = ["payments.E003", "payments.E004"]
