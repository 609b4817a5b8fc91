"""Framing: input -> exact bytes, and SSE injection impossible by construction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import framing as f
from gateway.framing import Format
from gateway.message import Message

MSG = b'{"id":"5-0","topic":"t","ts":1.5,"data":{"a":1}}'


@pytest.mark.parametrize(
    ("id", "topic", "ts", "data", "expected"),
    [
        ("1-0", "t", 1.5, b"1", b'{"id":"1-0","topic":"t","ts":1.5,"data":1}'),
        (
            "1-2",
            "a.b",
            0.0,
            b'{"x":[1,2]}',
            b'{"id":"1-2","topic":"a.b","ts":0.0,"data":{"x":[1,2]}}',
        ),
        (
            "0-9",
            "count",
            1763708400123.456,
            b'"s"',
            b'{"id":"0-9","topic":"count","ts":1763708400123.456,"data":"s"}',
        ),
        ("3-0", "t", 2.0, b"null", b'{"id":"3-0","topic":"t","ts":2.0,"data":null}'),
    ],
)
def test_message_json(id: str, topic: str, ts: float, data: bytes, expected: bytes) -> None:
    assert f.message_json(id, topic, ts, data) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (Format.NDJSON, MSG + b"\n" + MSG + b"\n"),
        (Format.JSON_ARRAY, b",\n" + MSG + b",\n" + MSG),
        (Format.SSE, b"id: 5-0\ndata: " + MSG + b"\n\nid: 6-0\ndata: " + MSG + b"\n\n"),
        (Format.WS, b"\x81" + bytes([len(MSG)]) + MSG + b"\x81" + bytes([len(MSG)]) + MSG),
    ],
)
def test_encode_messages(fmt: Format, expected: bytes) -> None:
    assert f.encode_messages(fmt, [("5-0", MSG), ("6-0", MSG)]) == expected


@pytest.mark.parametrize(
    ("fmt", "retry", "expected"),
    [
        (Format.NDJSON, None, b'{"type":"gap"}\n'),
        (Format.JSON_ARRAY, None, b',\n{"type":"gap"}'),
        (Format.SSE, None, b'event: gap\ndata: {"type":"gap"}\n\n'),
        (Format.SSE, 1500, b'event: gap\ndata: {"type":"gap"}\nretry: 1500\n\n'),
        (Format.WS, None, b'\x81\x0e{"type":"gap"}'),
    ],
)
def test_encode_control(fmt: Format, retry: int | None, expected: bytes) -> None:
    assert f.encode_control(fmt, "gap", b'{"type":"gap"}', retry=retry) == expected


def test_control_json_type_first() -> None:
    assert f.control_json("goodbye", reason="shutdown", reconnect_ms=1000, last_id=None) == (
        b'{"type":"goodbye","reason":"shutdown","reconnect_ms":1000,"last_id":null}'
    )


@pytest.mark.parametrize(
    ("length", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_ws_frame_lengths(length: int, header: bytes) -> None:
    # RFC 6455 section 5.2: 7-bit, 16-bit and 64-bit payload lengths, unmasked.
    payload = b"x" * length
    assert f.ws_frame(payload) == header + payload


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"a", b"1\r\na\r\n"), (b"x" * 26, b"1a\r\n" + b"x" * 26 + b"\r\n")],
)
def test_http_chunk(body: bytes, expected: bytes) -> None:
    assert f.http_chunk(body) == expected


def test_http_chunk_refuses_empty() -> None:
    # A zero-length chunk is the end of the body (RFC 9112 section 7.1).
    with pytest.raises(ValueError):
        f.http_chunk(b"")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": b"x"}, b"data: x\n\n"),
        ({"data": b"x", "id": "1-0"}, b"id: 1-0\ndata: x\n\n"),
        ({"data": b"x", "event": "end"}, b"event: end\ndata: x\n\n"),
        ({"data": b"a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": b"a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": b"", "retry": 10}, b"data: \nretry: 10\n\n"),
    ],
)
def test_sse_event(kwargs: dict[str, object], expected: bytes) -> None:
    assert f.sse_event(**kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_sse_event_refuses_breaking_ids_and_names(bad: str) -> None:
    with pytest.raises(ValueError):
        f.sse_event(b"x", id=bad)
    with pytest.raises(ValueError):
        f.sse_event(b"x", event=bad)


def test_sse_retry_field_has_no_blank_line() -> None:
    # It joins the block of the event written after it (see sse_retry_field).
    assert f.sse_retry_field(1000) == b"retry: 1000\n"


def _sse_fields(stream: bytes) -> list[list[tuple[str, str]]]:
    """A minimal WHATWG-style field splitter (the full decoder lives in clients/)."""
    events: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in stream.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if current:
                events.append(current)
            current = []
            continue
        name, _, value = line.partition(":")
        current.append((name, value[1:] if value.startswith(" ") else value))
    return events


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(data=json_values, seq=st.integers(0, 2**32))
def test_sse_frame_cannot_be_broken_by_data(data: object, seq: int) -> None:
    """Any data (CR, LF, NUL, U+2028 inside strings included) stays one event, one line."""
    import orjson

    msg = Message.create((1763708400123, seq), "t", orjson.dumps(data))
    for bad in (b"\r", b"\n", b"\0"):
        assert bad not in msg.json
    wire = f.encode_messages(Format.SSE, [(msg.id, msg.json)])
    events = _sse_fields(wire)
    assert events == [[("id", msg.id), ("data", msg.json.decode())]]
    assert orjson.loads(events[0][1][1])["data"] == data
    ndjson = f.encode_messages(Format.NDJSON, [(msg.id, msg.json)])
    assert ndjson.count(b"\n") == 1 and ndjson.endswith(b"\n")
