"""Generators the tests name with --source / --stream (module:function)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

PROGRESS = {"endless": 0}


async def endless(**params: str) -> AsyncIterator[dict[str, Any]]:
    """Never ends; records how far it has been advanced."""
    i = 0
    while True:
        i += 1
        PROGRESS["endless"] = i
        yield {"i": i, "pad": "x" * 100}


async def fails_after(n: str = "2") -> AsyncIterator[int]:
    for i in range(int(n)):
        yield i
    raise RuntimeError("the source broke")


async def letters() -> AsyncIterator[str]:
    for letter in "abc":
        yield letter
        await asyncio.sleep(0)


async def hold_files(n: str = "1000") -> AsyncIterator[dict[str, int]]:
    """Opens up to ``n`` files (until the open-files limit says no), yields how
    many, and holds them until the stream ends: descriptor exhaustion, for real."""
    files = []
    try:
        for _ in range(int(n)):
            try:
                files.append(open(os.devnull, "rb"))  # noqa: ASYNC230 (held on purpose)
            except OSError:
                break
        yield {"held": len(files)}
        await asyncio.sleep(3600)
    finally:
        for f in files:
            f.close()


async def rows(n: str = "1000000", cost: str = "0.00001") -> AsyncIterator[dict[str, int]]:
    """Numbered items that each take ``cost`` seconds of CPU to make (a rendered
    database row, say), and no ``skip`` parameter: resuming re-runs it from 1."""
    for i in range(1, int(n) + 1):
        end = time.perf_counter() + float(cost)
        while time.perf_counter() < end:
            pass
        yield {"i": i}
