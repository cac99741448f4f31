from __future__ import annotations

import pytest

from tests.support.gateways import gateway_script_reset


@pytest.fixture(autouse=True)
def _gateway_script_reset():
    gateway_script_reset()
    yield
    gateway_script_reset()
