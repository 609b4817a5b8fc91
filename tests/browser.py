"""Chromium for the browser tests, found in one place: the ``browser`` fixture.

``STREAMGATE_CHROMIUM`` names the browser to drive (a path, or a name on PATH);
without it, the first of ``chromium``, ``chromium-browser``, ``google-chrome``
and ``google-chrome-stable`` on PATH. playwright drives it as it is (no
``playwright install``: the browser is the system's). Where no browser is found,
or playwright is not installed, every test that asks for ``browser`` is skipped,
and the reason says how to get it. tests/conftest.py makes the fixture available
to every test module.

playwright is imported inside the fixture, so that a module of browser tests
(which imports playwright's names for its annotations only) still loads without it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = ["CHROMIUM_ARGS", "CHROMIUM_ENV", "CHROMIUM_NAMES", "browser", "find_chromium"]

CHROMIUM_ENV = "STREAMGATE_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOW_TO_GET_ONE = f"apt-get install -y chromium, or set {CHROMIUM_ENV} to a Chromium or Chrome"


def find_chromium() -> tuple[str | None, str]:
    """``(path, "")`` of the browser to drive, or ``(None, why not)``."""
    wanted = os.environ.get(CHROMIUM_ENV, "").strip()
    if wanted:
        path = shutil.which(wanted)
        if path is None:
            return None, f"{CHROMIUM_ENV}={wanted} is not an executable ({HOW_TO_GET_ONE})"
        return path, ""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path, ""
    return None, f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}): {HOW_TO_GET_ONE}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium, closed after the test; the test is skipped when there is none."""
    playwright = pytest.importorskip(
        "playwright.async_api",
        reason="playwright is not installed: pip install -e '.[test]'",
    )
    path, why_not = find_chromium()
    if path is None:
        pytest.skip(why_not)
    async with playwright.async_playwright() as p:
        b = await p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()
