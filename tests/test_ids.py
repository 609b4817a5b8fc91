"""Message ids: parsing, formatting, ordering, monotonic generation."""

from __future__ import annotations

import pytest

from gateway.ids import IdGenerator, format_id, parse_id


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("0-0", (0, 0)),
        ("1763708400123-7", (1763708400123, 7)),
        ("0-5", (0, 5)),
        ("18446744073709551615-1", (18446744073709551615, 1)),
        ("1-18446744073709551615", (1, 18446744073709551615)),
    ],
)
def test_parse_and_format_round_trip(text: str, key: tuple[int, int]) -> None:
    assert parse_id(text) == key
    assert format_id(key) == text


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "1",
        "1-",
        "-1",
        "-1-0",
        "1-2-3",
        "1 -2",
        " 1-2",
        "1-2\n",
        "1-2\r",
        "1\x00-2",
        "a-1",
        "1-a",
        "18446744073709551616-0",  # 2^64: 20 digits, but Redis refuses it
        "0-18446744073709551616",
        "99999999999999999999-0",
        "+1-2",
        "1.0-2",
        "1" * 21 + "-0",
        "0-" + "1" * 21,
        "１-2",
    ],
)
def test_malformed_ids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"malformed id|out of range"):
        parse_id(bad)


def test_ordering_is_numeric_not_lexical() -> None:
    assert parse_id("9-0") < parse_id("10-0")
    assert parse_id("5-9") < parse_id("5-10")


def test_generator_counts_within_a_millisecond_and_survives_clock_steps() -> None:
    times = iter([1.0, 1.0, 1.0, 1.0015, 0.5, 0.5, 2.0])
    gen = IdGenerator(clock=lambda: next(times))
    keys = [gen.next() for _ in range(7)]
    assert keys == [(1000, 0), (1000, 1), (1000, 2), (1001, 0), (1001, 1), (1001, 2), (2000, 0)]
    assert keys == sorted(set(keys))
