"""What checking published numbers costs: ``python -m bench.jsoncost``.

In-process timeit of the JSON work of one publish, before (``orjson.loads``)
and after (``gateway.jsonvalue.loads``), each followed by the ``orjson.dumps``
that makes the message's ``data``. Best of 7 repeats, in microseconds.
"""

from __future__ import annotations

import random
import timeit
import uuid
from collections.abc import Callable

import orjson

from gateway import jsonvalue

SMALL = b'{"n":1,"value":100.42}'
SIZE = 64 * 1024


def _fill(make: Callable[[], object]) -> bytes:
    """A JSON array of ``make()`` items just under 64 KiB."""
    items: list[object] = []
    size = 2
    while True:
        item = orjson.dumps(make())
        if size + len(item) + 1 > SIZE:
            return orjson.dumps(items)
        items.append(orjson.loads(item))
        size += len(item) + 1


def bodies() -> dict[str, bytes]:
    rng = random.Random(1)
    return {
        "small {n, value}": SMALL,
        "64 KiB ticks (numbers)": _fill(
            lambda: {"n": rng.randrange(10**9), "value": round(rng.uniform(-1e3, 1e3), 4)}
        ),
        "64 KiB text": _fill(lambda: {"msg": "the quick brown fox jumps over the lazy dog " * 2}),
        "64 KiB floats": _fill(lambda: rng.random() * rng.choice([1, -1e-5, 1e10])),
        "64 KiB uuid strings (flagged)": _fill(
            lambda: {"id": str(uuid.UUID(int=rng.getrandbits(128)))}
        ),
        "64 KiB 20-digit strings (flagged)": _fill(
            lambda: {"id": str(rng.randrange(10**19, 10**20))}
        ),
    }


def best(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def cost(body: bytes) -> tuple[float, float]:
    """Microseconds per publish of ``body``: before, after."""
    number = 20_000 if len(body) < 1000 else 200
    before = best(lambda: orjson.dumps(orjson.loads(body)), number)
    after = best(lambda: jsonvalue.dumps(jsonvalue.loads(body)), number)
    return before, after


def main() -> None:
    print(f"{'body':36} {'bytes':>6} {'before':>9} {'after':>9} {'added':>9}  flagged")
    for name, body in bodies().items():
        before, after = cost(body)
        added = after - before
        flagged = jsonvalue._suspicious(body)
        print(f"{name:36} {len(body):6} {before:8.2f}µ {after:8.2f}µ {added:+8.2f}µ  {flagged}")


if __name__ == "__main__":
    main()
