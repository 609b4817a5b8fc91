"""pytest configuration: fixtures shared by the suite live in tests/helpers.py, and the
browser tests' ``browser`` (a Chromium, or a skip saying how to get one) in tests/browser.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.browser import browser
from tests.helpers import GatewayUnderTest, start_gateway

__all__ = ["browser", "gateway"]


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayUnderTest]:
    """A gateway with default test settings and one topic, ``news``."""
    async with start_gateway(topics=("news",)) as gw:
        yield gw
