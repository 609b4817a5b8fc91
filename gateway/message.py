"""The message value: an id, a topic, a publish time and the encoded JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .framing import message_json
from .ids import Key, format_id

__all__ = ["Message", "now_ms"]


def now_ms() -> float:
    """Wall-clock time in Unix milliseconds, microsecond precision."""
    return round(time.time() * 1000, 3)


@dataclass(frozen=True, slots=True)
class Message:
    """One published message. ``json`` is the exact bytes every transport carries."""

    key: Key
    id: str
    topic: str
    ts: float
    json: bytes

    @classmethod
    def create(cls, key: Key, topic: str, data_json: bytes, ts: float | None = None) -> Message:
        id = format_id(key)
        ts = now_ms() if ts is None else ts
        # orjson hands back its output buffer without shrinking it: at least
        # 4 KiB, and up to twice the length past that. Messages live on in
        # history, so keep an exact-size copy (about 0.15 us).
        json = bytes(memoryview(message_json(id, topic, ts, data_json)))
        return cls(key, id, topic, ts, json)
