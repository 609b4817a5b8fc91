"""NDJSONDecoder and JSONArrayDecoder: tables, then round trips with the server's framing."""

from __future__ import annotations

import itertools
import json

import ijson
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.chunked import JSONArrayDecoder, NDJSONDecoder
from gateway import framing


def _feed_all(dec: NDJSONDecoder, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for piece in pieces:
        out.extend(dec.feed(piece))
    return out


@pytest.mark.parametrize(
    ("pieces", "lines", "pending"),
    [
        ([b'{"a":1}\n'], [b'{"a":1}'], b""),
        ([b'{"a":1}\n{"b":2}\n'], [b'{"a":1}', b'{"b":2}'], b""),  # many lines, one chunk
        ([b'{"a"', b":", b"1}", b"\n"], [b'{"a":1}'], b""),  # one line, many chunks
        ([b'{"a":1}\n{"b"'], [b'{"a":1}'], b'{"b"'),  # truncated last line kept pending
        ([b"\n", b"\n\n", b'{"a":1}\n', b"\n"], [b'{"a":1}'], b""),  # heartbeats skipped
        ([b'{"a":1}', b"\n\n", b'{"b":2}\n'], [b'{"a":1}', b'{"b":2}'], b""),
        ([b'{"a":1}\r\n'], [b'{"a":1}\r'], b""),  # CR is JSON whitespace, kept
        ([b"   \n"], [], b""),  # whitespace-only line is blank
        ([b"", b'{"s":"\xc3', b'\xa9"}\n'], [b'{"s":"\xc3\xa9"}'], b""),  # UTF-8 split
    ],
)
def test_ndjson_lines(pieces: list[bytes], lines: list[bytes], pending: bytes) -> None:
    dec = NDJSONDecoder()
    assert _feed_all(dec, pieces) == lines
    assert dec.pending == pending


def test_json_array_items_incrementally() -> None:
    dec = JSONArrayDecoder()
    assert dec.feed(b'[{"id":"1-0","ts":1.5,"data":') == []
    assert dec.feed(b'{"n":1}},\n{"type":"goodbye"') == [{"id": "1-0", "ts": 1.5, "data": {"n": 1}}]
    assert dec.feed(b"}\n\n]") == [{"type": "goodbye"}]
    assert dec.feed(b"\n") == []
    assert dec.close() == []


def test_json_array_empty() -> None:
    dec = JSONArrayDecoder()
    assert dec.feed(b"[\n\n]\n") == []
    assert dec.close() == []


def test_json_array_cut_short_raises_on_close() -> None:
    dec = JSONArrayDecoder()
    assert dec.feed(b'[{"a":1},\n{"a"') == [{"a": 1}]
    with pytest.raises(ijson.IncompleteJSONError):
        dec.close()


def test_json_array_rejects_garbage() -> None:
    dec = JSONArrayDecoder()
    with pytest.raises(ijson.JSONError):
        dec.feed(b"[1}")


# -- round trips with the server's framing ---------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
messages = st.builds(
    lambda n, ts, d: (f"{n}-0", framing.message_json(f"{n}-0", "t", ts, orjson.dumps(d))),
    st.integers(0, 2**64 - 1),
    st.floats(0, 1e15, allow_nan=False),
    json_values,
)
items = st.lists(messages | st.just(None), min_size=0, max_size=12)  # None: a heartbeat


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=100, deadline=None)
@given(items, st.lists(st.integers(0, 10**6), max_size=30))
def test_round_trip_ndjson(stream_items: list[tuple[str, bytes] | None], cuts: list[int]) -> None:
    stream = b""
    expected: list[bytes] = []
    for item in stream_items:
        if item is None:
            stream += framing.NDJSON_HEARTBEAT
        else:
            stream += framing.encode_messages(framing.Format.NDJSON, [item])
            expected.append(item[1])
    end = framing.control_json("end", reason="limit", last_id=None)
    stream += framing.encode_control(framing.Format.NDJSON, "end", end)
    dec = NDJSONDecoder()
    assert _feed_all(dec, _split(stream, cuts)) == [*expected, end]
    assert dec.pending == b""


@settings(max_examples=100, deadline=None)
@given(items, st.lists(st.integers(0, 10**6), max_size=30))
def test_round_trip_json_array(
    stream_items: list[tuple[str, bytes] | None], cuts: list[int]
) -> None:
    stream = framing.JSON_OPEN
    expected: list[object] = []
    for item in stream_items:
        if item is None:
            stream += b"\n"  # a heartbeat is whitespace between items
            continue
        framed = framing.encode_messages(framing.Format.JSON_ARRAY, [item])
        # The first item goes without its leading separator, as the gateway writes it.
        stream += framed[framing.JSON_FIRST_STRIP :] if not expected else framed
        expected.append(json.loads(item[1]))
    stream += framing.JSON_CLOSE
    dec = JSONArrayDecoder()
    out: list[object] = []
    for piece in _split(stream, cuts):
        out.extend(dec.feed(piece))
    out.extend(dec.close())
    assert out == expected
