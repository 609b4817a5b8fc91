"""Published numbers are never silently changed: gateway/jsonvalue.py, and the
publish API over a real gateway."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
import websockets

from gateway import jsonvalue
from gateway.errors import BadRequest
from tests.helpers import GatewayUnderTest, start_gateway

TOO_BIG_INT = "does not fit in 64 bits"
TOO_LARGE = "is too large for a 64-bit float"
TOO_SMALL = "is too small for a 64-bit float"
DEEP = 1000  # orjson takes 1024 levels; the stdlib json module fails before 1000


# -- the module: exact tables -------------------------------------------------------

ACCEPTED: list[tuple[bytes, Any]] = [
    (b"18446744073709551615", 2**64 - 1),
    (b"-9223372036854775808", -(2**63)),
    (b"9999999999999999999", 9999999999999999999),
    (b"12345678901234567890", 12345678901234567890),
    (b"-1000000000000000000", -(10**18)),
    (b"0e-400", 0.0),
    (b"-0e-400", -0.0),
    (b"0.000e-999", 0.0),
    (b"0.1000000000000000000001", 0.1),  # ordinary double rounding is kept
    (b"123456789012345678901.5", 123456789012345678901.5),
    (b"1e308", 1e308),
    (b"1.7976931348623157e308", 1.7976931348623157e308),
    (b"1e-300", 1e-300),
    (b"5e-324", 5e-324),
    (b"3e-324", 5e-324),  # rounds to the smallest subnormal, not to zero
    (b'"18446744073709551616"', "18446744073709551616"),
    (b'{"a":"1e-400","b":"99999999999999999999","c":"-92233720368547758099"}', None),
    (b'["\\"99999999999999999999", "\\\\", "e-400", 1]', None),
    (b'{"a":[1,{"b":[18446744073709551615,-9223372036854775808]}]}', None),
    (b" \n 18446744073709551615 \n ", 2**64 - 1),
    (b"[" * DEEP + b"1e-300" + b"]" * DEEP, None),
    (b'{"n":1,"value":100.42}', {"n": 1, "value": 100.42}),
]


@pytest.mark.parametrize(("body", "expected"), ACCEPTED, ids=lambda v: repr(v)[:40])
def test_accepted_values_are_orjsons(body: bytes, expected: Any) -> None:
    value = jsonvalue.loads(body)
    if body.startswith(b"[" * DEEP):  # == would recurse 1000 levels: walk down instead
        for _ in range(DEEP):
            (value,) = value
        assert value == 1e-300
        return
    assert value == orjson.loads(body)
    if expected is not None:
        assert value == expected
        assert type(value) is type(expected)


REFUSED: list[tuple[bytes, str]] = [
    (b"18446744073709551616", f"integer 18446744073709551616 {TOO_BIG_INT}"),
    (b"-18446744073709551616", f"integer -18446744073709551616 {TOO_BIG_INT}"),
    (b"-9223372036854775809", f"integer -9223372036854775809 {TOO_BIG_INT}"),
    (b"99999999999999999999999", f"integer 99999999999999999999999 {TOO_BIG_INT}"),
    (b"1" * 5000, f"integer {'1' * 24}…11111111 (5000 characters) {TOO_BIG_INT}"),
    (b"1e400", f"number 1e400 {TOO_LARGE}"),
    (b"-1e400", f"number -1e400 {TOO_LARGE}"),
    (b"1E+400", f"number 1E+400 {TOO_LARGE}"),
    (b"1.7976931348623159e308", f"number 1.7976931348623159e308 {TOO_LARGE}"),
    (b"1" * 400 + b".5", f"(402 characters) {TOO_LARGE}"),
    (b"1e-400", f"number 1e-400 {TOO_SMALL}"),
    (b"-1e-400", f"number -1e-400 {TOO_SMALL}"),
    (b"2e-324", f"number 2e-324 {TOO_SMALL}"),
    (b"1E-0000400", f"number 1E-0000400 {TOO_SMALL}"),
    (b"0." + b"0" * 400 + b"1", f"(403 characters) {TOO_SMALL}"),
    (b'{"a":[1,{"b":[18446744073709551616]}]}', f"integer 18446744073709551616 {TOO_BIG_INT}"),
    (b'{"s":"\\"x","a":[1e-400]}', f"number 1e-400 {TOO_SMALL}"),
    (b'{"\xc3\xa9":[1, 2, -1e400]}', f"number -1e400 {TOO_LARGE}"),
    (b"[" * DEEP + b"1e-400" + b"]" * DEEP, f"number 1e-400 {TOO_SMALL}"),
    (b"[1e400", f"number 1e400 {TOO_LARGE}"),  # named even though the array is unclosed
]


@pytest.mark.parametrize(("body", "message"), REFUSED, ids=lambda v: repr(v)[:40])
def test_numbers_that_would_change_are_refused_saying_why(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        jsonvalue.loads(body)
    assert info.value.code == "bad_json"
    assert info.value.status == 400
    assert message in info.value.message
    assert info.value.message.endswith("send it as a string")


def test_the_refusal_reads_as_the_issue_asks() -> None:
    with pytest.raises(BadRequest) as info:
        jsonvalue.loads(b'{"big": 18446744073709551616}')
    assert info.value.message == (
        "integer 18446744073709551616 does not fit in 64 bits (integers from -2^63 to "
        "2^64-1 are kept exactly); send it as a string"
    )


@pytest.mark.parametrize(
    ("body", "what", "message"),
    [
        (b"{", "the body", "the body is not valid JSON: "),
        ('{"type":', "command", "command is not valid JSON: "),
        (b"[1,]", "the body", "the body is not valid JSON: "),
        (b"NaN", "the body", "the body is not valid JSON: "),
        (b"[18446744073709551616,]", "the body", "the body is not valid JSON: "),
    ],
)
def test_not_json_says_so(body: bytes | str, what: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        jsonvalue.loads(body, what=what)
    assert info.value.code == "bad_json"
    assert info.value.message.startswith(message)


def test_text_is_checked_like_bytes() -> None:
    """A WebSocket text frame arrives as str."""
    assert jsonvalue.loads('{"é":18446744073709551615}') == {"é": 2**64 - 1}
    with pytest.raises(BadRequest, match=TOO_BIG_INT):
        jsonvalue.loads('{"type":"publish","data":{"é":18446744073709551616}}', what="command")


def test_ndjson_lines_are_each_checked_and_named() -> None:
    body = b'{"a":1}\n\n"18446744073709551616"\r\n[2]\n'
    assert jsonvalue.loads_lines(body) == [{"a": 1}, "18446744073709551616", [2]]
    with pytest.raises(BadRequest, match=f"integer 18446744073709551616 {TOO_BIG_INT}"):
        jsonvalue.loads_lines(b'{"a":1}\n{"b":18446744073709551616}\n')
    with pytest.raises(BadRequest, match="line 3 is not valid JSON"):
        jsonvalue.loads_lines(b'{"a":1}\n\n{"b":\n')


def test_dumps_writes_what_orjson_can_and_refuses_deeper() -> None:
    deepest = b"[" * jsonvalue.MAX_DEPTH + b"]" * jsonvalue.MAX_DEPTH
    assert jsonvalue.dumps(jsonvalue.loads(deepest)) == deepest
    assert jsonvalue.dumps({"a": [1, 2.5, "x", None]}) == b'{"a":[1,2.5,"x",null]}'
    too_deep = jsonvalue.loads(b"[" + deepest + b"]")
    with pytest.raises(BadRequest) as info:
        jsonvalue.dumps(too_deep)
    assert info.value.code == "bad_json"
    assert "nested more than 254 levels deep" in info.value.message


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (b"0", None),
        (b"-0", None),
        (b"1844674407370955161", None),
        (b"18446744073709551615", None),
        (b"18446744073709551616", TOO_BIG_INT),
        (b"-9223372036854775808", None),
        (b"-9223372036854775809", TOO_BIG_INT),
        (b"1e308", None),
        (b"1e309", TOO_LARGE),
        (b"1e-323", None),
        (b"1e-324", TOO_SMALL),
        (b"0.0e-9999", None),
        (b"0.00000000000000000000000000000000001", None),
    ],
)
def test_number_problem_table(token: bytes, problem: str | None) -> None:
    found = jsonvalue.number_problem(token)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_the_prefilter_never_misses_a_number_that_would_change() -> None:
    """Every token ``number_problem`` refuses, in any position a JSON number can
    take, is seen by the cheap check that decides whether to look closely."""
    rng = random.Random(20240611)
    tokens: list[bytes] = [b"18446744073709551616", b"-9223372036854775809", b"1e-400"]
    for _ in range(3000):
        sign = rng.choice([b"", b"-"])
        digits = str(rng.randrange(1, 10 ** rng.randint(1, 30))).encode()
        fraction = rng.choice([b"", b"." + b"0" * rng.randint(0, 400) + b"1"])
        exponent = rng.choice(
            [b"", b"E-0400", b"e+310"]
            + [b"e" + sign + str(rng.randint(0, 999)).encode() for sign in (b"", b"-", b"+")]
        )
        if fraction or exponent:
            digits = rng.choice([digits, b"0"])
        tokens.append(sign + digits + fraction + exponent)
    refused = [t for t in tokens if jsonvalue.number_problem(t) is not None]
    assert len(refused) > 300
    for token in refused:
        for body in (
            token,
            b"[" + token + b"]",
            b'{"k":' + token + b"}",
            b"[1,\n\t" + token + b"]",
        ):
            with pytest.raises(BadRequest):
                jsonvalue.loads(body)
    for token in tokens:
        if jsonvalue.number_problem(token) is None:
            assert jsonvalue.loads(b"[" + token + b"]") == orjson.loads(b"[" + token + b"]")


# -- over HTTP, on a real gateway ------------------------------------------------------

BAD_BODIES = [
    (b"18446744073709551616", f"integer 18446744073709551616 {TOO_BIG_INT}"),
    (b'{"n":-9223372036854775809}', f"integer -9223372036854775809 {TOO_BIG_INT}"),
    (b'{"x":1e400}', f"number 1e400 {TOO_LARGE}"),
    (b'{"x":-1e400}', f"number -1e400 {TOO_LARGE}"),
    (b'{"x":[1,{"y":1e-400}]}', f"number 1e-400 {TOO_SMALL}"),
]


async def history(gw: GatewayUnderTest, topic: str) -> list[Any]:
    async with gw.session.get(f"{gw.url}/topics/{topic}/messages") as resp:
        assert resp.status == 200
        return [m["data"] for m in (await resp.json())["messages"]]


async def post(
    gw: GatewayUnderTest, path: str, body: bytes, content_type: str = "application/json"
) -> tuple[int, Any]:
    async with gw.session.post(
        f"{gw.url}{path}", data=body, headers={"Content-Type": content_type}
    ) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(("body", "message"), BAD_BODIES, ids=lambda v: repr(v)[:40])
async def test_publish_refuses_a_number_it_would_change_and_publishes_nothing(
    body: bytes, message: str
) -> None:
    async with start_gateway(topics=("news",)) as gw:
        await gw.publish("news", {"before": 1})
        status, reply = await post(gw, "/topics/news", body)
        assert (status, reply["error"]) == (400, "bad_json")
        assert message in reply["message"]
        assert await history(gw, "news") == [{"before": 1}]


async def test_a_batch_with_one_bad_number_publishes_nothing() -> None:
    async with start_gateway(topics=("news",)) as gw:
        body = b'[{"n":1},{"n":2},{"n":18446744073709551616},{"n":4}]'
        status, reply = await post(gw, "/topics/news/batch", body)
        assert (status, reply["error"]) == (400, "bad_json")
        assert f"integer 18446744073709551616 {TOO_BIG_INT}" in reply["message"]
        lines = b'{"n":1}\n{"n":2}\n{"n":1e-400}\n'
        status, reply = await post(gw, "/topics/news/batch", lines, "application/x-ndjson")
        assert (status, reply["error"]) == (400, "bad_json")
        assert f"number 1e-400 {TOO_SMALL}" in reply["message"]
        assert await history(gw, "news") == []


async def test_numbers_at_the_edges_arrive_exactly_as_published() -> None:
    async with start_gateway(topics=("news",)) as gw:
        body = (
            b'{"max":18446744073709551615,"min":-9223372036854775808,'
            b'"zero":0e-400,"tiny":5e-324,"long":0.1000000000000000000001,'
            b'"in_a_string":"18446744073709551616"}'
        )
        status, _ = await post(gw, "/topics/news", body)
        assert status == 201
        assert await history(gw, "news") == [
            {
                "max": 2**64 - 1,
                "min": -(2**63),
                "zero": 0.0,
                "tiny": 5e-324,
                "long": 0.1,
                "in_a_string": "18446744073709551616",
            }
        ]
        status, _ = await post(
            gw, "/topics/news/batch", b"18446744073709551615\n-1\n", "application/x-ndjson"
        )
        assert status == 201
        assert (await history(gw, "news"))[1:] == [2**64 - 1, -1]


async def test_values_nested_deeper_than_the_gateway_writes_are_400_not_500() -> None:
    async with start_gateway(topics=("news",)) as gw:
        depth = jsonvalue.MAX_DEPTH
        status, _ = await post(gw, "/topics/news", b"[" * depth + b"]" * depth)
        assert status == 201
        too_deep = b"[" * (depth + 1) + b"]" * (depth + 1)
        status, reply = await post(gw, "/topics/news", too_deep)
        assert (status, reply["error"]) == (400, "bad_json")
        assert "nested more than 254 levels deep" in reply["message"]
        status, reply = await post(gw, "/topics/news/batch", b"[1," + too_deep + b"]")
        assert (status, reply["error"]) == (400, "bad_json")
        assert len(await history(gw, "news")) == 1


async def test_the_websocket_publish_command_keeps_the_same_rule() -> None:
    async with start_gateway(topics=("news",)) as gw:
        async with websockets.connect(f"{gw.ws_url}/ws/news") as ws:
            for data, expect in (
                ("18446744073709551616", TOO_BIG_INT),
                ("1e-400", TOO_SMALL),
                ("[" * 300 + "]" * 300, "deep"),
            ):
                await ws.send(f'{{"type":"publish","ref":1,"data":{data}}}')
                reply = orjson.loads(await ws.recv())
                assert reply["type"] == "error" and reply["code"] == "bad_json", reply
                assert expect in reply["message"] or expect == "deep", reply
            await ws.send('{"type":"publish","ref":2,"data":18446744073709551615}')
            frames = [orjson.loads(await ws.recv()) for _ in range(2)]
        async with gw.session.get(f"{gw.url}/topics/news/messages") as resp:
            history = [m["data"] for m in (await resp.json())["messages"]]
    published = next(f for f in frames if f.get("type") == "published")
    message = next(f for f in frames if "type" not in f)
    assert published["ref"] == 2
    assert message["data"] == 2**64 - 1
    assert history == [2**64 - 1]  # nothing else was published
