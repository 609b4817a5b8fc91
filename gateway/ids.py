"""Message ids: ``<milliseconds>-<sequence>``, the Redis Stream id form.

Pure functions and one small generator class; no I/O. An id is compared as the
integer pair ``(ms, seq)``, so the same string means the same position on every
transport and every replica.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

__all__ = ["ID_PART_MAX", "ZERO", "IdGenerator", "Key", "format_id", "parse_id"]

Key = tuple[int, int]
"""An id as the integer pair that orders it."""

ZERO: Key = (0, 0)

ID_PART_MAX = 2**64 - 1
"""Each part of an id is an unsigned 64-bit integer, as in Redis Stream ids."""

# Both parts are plain decimal digits, at most 20 each (2**64 has 20 digits).
# No sign, no spaces, no other separator: anything else is rejected.
_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def parse_id(text: str) -> Key:
    """Parse ``"<ms>-<seq>"`` into its ordering key.

    Raises ValueError with a readable message for anything malformed.
    """
    match = _ID_RE.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 64 else text[:64] + "…"
        raise ValueError(f"malformed id {shown!r}: expected <milliseconds>-<sequence>")
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > ID_PART_MAX or seq > ID_PART_MAX:
        raise ValueError(f"id {text!r} is out of range: each part is at most {ID_PART_MAX}")
    return ms, seq


def format_id(key: Key) -> str:
    """The wire form of an id key."""
    return f"{key[0]}-{key[1]}"


class IdGenerator:
    """Hands out strictly increasing ids for one topic.

    ``ms`` follows the wall clock; ``seq`` counts ids issued in the same
    millisecond. If the clock steps back, the last ``ms`` is kept and ``seq``
    keeps counting, so ids never go backwards (as Redis XADD does).
    """

    __slots__ = ("_clock", "_last")

    def __init__(self, clock: Callable[[], float] = time.time, last: Key = ZERO) -> None:
        self._clock = clock
        self._last = last

    @property
    def last(self) -> Key:
        return self._last

    def next(self) -> Key:
        ms = int(self._clock() * 1000)
        last_ms, last_seq = self._last
        key = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        self._last = key
        return key
