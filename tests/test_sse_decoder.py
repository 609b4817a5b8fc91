"""SSEDecoder against the WHATWG "Interpreting an event stream" rules, one case per rule.

Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
Each case is fed whole, byte by byte, and split at every position: the events out
must be the same exactly, whatever the cut.
"""

from __future__ import annotations

import itertools

import pytest

from clients.sse import Event, SSEDecoder

M = "message"

# (rule, stream bytes, expected events, expected last_event_id, expected retry)
CASES: list[tuple[str, bytes, list[Event], str, int | None]] = [
    ("LF line ends", b"data: a\n\n", [Event(M, "a")], "", None),
    ("CRLF line ends", b"data: a\r\n\r\n", [Event(M, "a")], "", None),
    ("CR line ends", b"data: a\r\r", [Event(M, "a")], "", None),
    (
        "mixed line ends",
        b"data: a\rdata: b\r\ndata: c\n\r\n",
        [Event(M, "a\nb\nc")],
        "",
        None,
    ),
    ("CR then LF on its own is one line end", b"data: a\r\n\n", [Event(M, "a")], "", None),
    ("CR CR is two line ends", b"data: a\r\rdata: b\n\n", [Event(M, "a"), Event(M, "b")], "", None),
    ("UTF-8 BOM stripped at stream start", b"\xef\xbb\xbfdata: a\n\n", [Event(M, "a")], "", None),
    (
        "only one BOM stripped: a second one is part of the field name",
        b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n",
        [Event(M, "b")],
        "",
        None,
    ),
    (
        "BOM later in the stream is data",
        b"data: \xef\xbb\xbfa\n\n",
        [Event(M, "\ufeffa")],
        "",
        None,
    ),
    ("comment line ignored", b": ping\n\n", [], "", None),
    ("comment between fields", b"data: a\n: ping\ndata: b\n\n", [Event(M, "a\nb")], "", None),
    ("one leading space removed", b"data:  two\n\n", [Event(M, " two")], "", None),
    ("no space after colon", b"data:x\n\n", [Event(M, "x")], "", None),
    ("colon in the value kept", b"data: a: b:c\n\n", [Event(M, "a: b:c")], "", None),
    ("field with no colon: empty value", b"data\n\n", [Event(M, "")], "", None),
    ("field with no colon appends LF", b"data\ndata\n\n", [Event(M, "\n")], "", None),
    ("empty data field dispatches empty data", b"data:\n\n", [Event(M, "")], "", None),
    ("multi-line data joined by LF", b"data: a\ndata: b\n\n", [Event(M, "a\nb")], "", None),
    ("trailing LF of data removed once", b"data: a\ndata:\n\n", [Event(M, "a\n")], "", None),
    ("no data: event not dispatched", b"event: x\n\n", [], "", None),
    ("event type", b"event: gap\ndata: {}\n\n", [Event("gap", "{}")], "", None),
    ("empty event type is message", b"event:\ndata: a\n\n", [Event(M, "a")], "", None),
    (
        "event type reset after dispatch",
        b"event: x\ndata: 1\n\ndata: 2\n\n",
        [Event("x", "1"), Event(M, "2")],
        "",
        None,
    ),
    (
        "event type reset even when not dispatched",
        b"event: x\n\ndata: 2\n\n",
        [Event(M, "2")],
        "",
        None,
    ),
    ("unknown field ignored", b"foo: bar\ndata: a\n\n", [Event(M, "a")], "", None),
    ("field names are case-sensitive", b"Data: a\nDATA: b\n\n", [], "", None),
    ("id sets last event id", b"id: 7\ndata: a\n\n", [Event(M, "a", "7")], "7", None),
    (
        "id persists across events",
        b"id: 7\ndata: a\n\ndata: b\n\n",
        [Event(M, "a", "7"), Event(M, "b", "7")],
        "7",
        None,
    ),
    (
        "empty id resets last event id",
        b"id: 7\ndata: a\n\nid\ndata: b\n\n",
        [Event(M, "a", "7"), Event(M, "b", "")],
        "",
        None,
    ),
    (
        "id with NUL ignored",
        b"id: 7\ndata: a\n\nid: 8\x009\ndata: b\n\n",
        [Event(M, "a", "7"), Event(M, "b", "7")],
        "7",
        None,
    ),
    ("id without data moves last event id, no event", b"id: 9\n\n", [], "9", None),
    (
        "id of an incomplete event is not yet committed",
        b"data: a\n\nid: 9\ndata: b\n",
        [Event(M, "a")],
        "",
        None,
    ),
    ("retry digits", b"retry: 1500\n\n", [], "", 1500),
    ("retry with non-digit ignored", b"retry: 15a\nretry: -1\nretry: 1.5\n\n", [], "", None),
    ("retry with spaces ignored", b"retry:  10\n\n", [], "", None),
    ("retry non-ASCII digits ignored", "retry: ١٢\n\n".encode(), [], "", None),
    ("empty retry ignored", b"retry:\nretry\n\n", [], "", None),
    ("retry applies without dispatch", b"retry: 5\ndata: a\n", [], "", 5),
    ("incomplete event at end not dispatched", b"data: a\n\ndata: b\n", [Event(M, "a")], "", None),
    ("unterminated last line not processed", b"data: a\n\ndata: b", [Event(M, "a")], "", None),
    ("invalid UTF-8 replaced", b"data: a\xffb\n\n", [Event(M, "a\ufffdb")], "", None),
    ("truncated UTF-8 sequence replaced", b"data: \xe2\x82\n\n", [Event(M, "\ufffd")], "", None),
    ("non-ASCII kept", "data: héllo €\n\n".encode(), [Event(M, "héllo €")], "", None),
    (
        "U+2028, VT and FF are not line ends",
        "data: a\u2028b\x0bc\x0cd\x85e\n\n".encode(),
        [Event(M, "a\u2028b\x0bc\x0cd\x85e")],
        "",
        None,
    ),
    ("NUL in data kept", b"data: a\x00b\n\n", [Event(M, "a\x00b")], "", None),
    ("space before colon is part of the name", b"data : a\n\n", [], "", None),
    ("blank lines alone dispatch nothing", b"\n\n\r\n\r", [], "", None),
]


def _cuts(stream: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut in two at every position."""
    out = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    out += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return out


@pytest.mark.parametrize(
    ("stream", "events", "last_id", "retry"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_whatwg_rule(stream: bytes, events: list[Event], last_id: str, retry: int | None) -> None:
    for pieces in _cuts(stream):
        dec = SSEDecoder()
        out: list[Event] = []
        for piece in pieces:
            out.extend(dec.feed(piece))
        assert out == events, pieces
        assert dec.last_event_id == last_id, pieces
        assert dec.retry == retry, pieces


def test_crlf_split_across_feeds_counts_once() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    # The LF completes the CRLF of the data line; it is not the blank line.
    assert dec.feed(b"\n") == []
    assert dec.feed(b"\r") == [Event(M, "a")]
    assert dec.feed(b"\ndata: b\r\n\r\n") == [Event(M, "b")]


def test_bom_split_across_feeds() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"\xef") == []
    assert dec.feed(b"\xbb") == []
    assert dec.feed(b"\xbfdata: a\n\n") == [Event(M, "a")]


def test_last_event_id_persists_across_reset() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"id: 5\ndata: a\n\ndata: partial") == [Event(M, "a", "5")]
    dec.reset()  # reconnection: the partial event is discarded, the id is kept
    assert dec.last_event_id == "5"
    assert dec.feed(b"data: b\n\n") == [Event(M, "b", "5")]


def test_reset_strips_bom_again_and_keeps_retry() -> None:
    dec = SSEDecoder()
    dec.feed(b"retry: 250\n\n")
    dec.reset()
    assert dec.retry == 250
    assert dec.feed(b"\xef\xbb\xbfdata: a\n\n") == [Event(M, "a")]


def test_initial_last_event_id() -> None:
    dec = SSEDecoder(last_event_id="1-0")
    assert dec.feed(b"data: a\n\n") == [Event(M, "a", "1-0")]


def test_reset_forgets_uncommitted_id() -> None:
    dec = SSEDecoder()
    dec.feed(b"id: 3\ndata: a\n\nid: 4\n")
    dec.reset()
    assert dec.feed(b"data: b\n\n") == [Event(M, "b", "3")]


def test_streamgate_frames() -> None:
    """The frames PROTOCOL.md shows, as the gateway writes them."""
    msg = '{"id":"1-0","topic":"ticks","ts":1.5,"data":{"n":1}}'
    goodbye = '{"type":"goodbye","reason":"shutdown","reconnect_ms":1000,"last_id":"1-0"}'
    stream = (
        "retry: 1000\n"
        f"id: 1-0\ndata: {msg}\n\n"
        ": ping\n\n"
        f"event: goodbye\ndata: {goodbye}\nretry: 1000\n\n"
    ).encode()
    dec = SSEDecoder()
    assert dec.feed(stream) == [Event(M, msg, "1-0"), Event("goodbye", goodbye, "1-0")]
    assert dec.retry == 1000


# -- round trips with the server's encoder ----------------------------------------

# Imported here, not at the top: the decoder tables above need no gateway.
import orjson  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from clients.sse import Message  # noqa: E402
from gateway import framing  # noqa: E402

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
ids = st.builds(lambda ms, seq: f"{ms}-{seq}", st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
topics = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True)
messages = st.builds(
    lambda i, t, ts, d: (i, framing.message_json(i, t, ts, orjson.dumps(d))),
    ids,
    topics,
    st.floats(0, 1e15, allow_nan=False),
    json_values,
)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(messages | st.sampled_from(["heartbeat", "goodbye", "gap"]), min_size=1, max_size=12),
    st.lists(st.integers(0, 10**6), max_size=30),
)
def test_round_trip_server_sse_encoding(items: list[object], cuts: list[int]) -> None:
    """Whatever the server frames, cut anywhere, decodes back to the same events."""
    stream = framing.sse_retry_field(1000)
    expected: list[Event] = []
    last_id = ""
    for item in items:
        if item == "heartbeat":
            stream += framing.SSE_HEARTBEAT
        elif isinstance(item, str):
            obj = framing.control_json(item, reason="shutdown", last_id=last_id or None)
            stream += framing.encode_control(framing.Format.SSE, item, obj, retry=1000)
            expected.append(Event(item, obj.decode(), last_id))
        else:
            assert isinstance(item, tuple)
            msg_id, msg_json = item
            stream += framing.encode_messages(framing.Format.SSE, [(msg_id, msg_json)])
            last_id = msg_id
            expected.append(Event("message", msg_json.decode(), msg_id))
    dec = SSEDecoder()
    out: list[Event] = []
    for piece in _split(stream, cuts):
        out.extend(dec.feed(piece))
    assert out == expected
    assert dec.retry == 1000
    assert dec.last_event_id == last_id
    for event in out:
        if event.type == "message":
            msg = Message.parse(event.data)
            assert msg.id == event.last_event_id
            assert msg.raw == event.data


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"data",
                b"data:",
                b"data: x",
                b"id: 1",
                b"id",
                b"event: e",
                b"retry: 7",
                b":c",
                b"",
                b"\xef\xbb\xbf",
                b"\xff",
                "é".encode(),
                b"x",
            ]
        ),
        max_size=20,
    ),
    st.lists(st.sampled_from([b"\n", b"\r", b"\r\n"]), min_size=20, max_size=20),
    st.lists(st.integers(0, 10**6), max_size=20),
)
def test_any_cut_decodes_like_one_feed(
    lines: list[bytes], ends: list[bytes], cuts: list[int]
) -> None:
    """Split invariance on arbitrary streams with every kind of line end."""
    stream = b"".join(line + end for line, end in zip(lines, ends, strict=False))
    whole = SSEDecoder()
    expected = whole.feed(stream)
    dec = SSEDecoder()
    out: list[Event] = []
    for piece in _split(stream, cuts):
        out.extend(dec.feed(piece))
    assert out == expected
    assert (dec.last_event_id, dec.retry) == (whole.last_event_id, whole.retry)
