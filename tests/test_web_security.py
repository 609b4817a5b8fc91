"""What a web page on another origin can make a browser do to the gateway, over
real loopback sockets: publishing needs a JSON Content-Type (no form and no
``no-cors`` fetch can publish), WebSocket handshakes from foreign origins are
refused before the upgrade, CORS answers only listed origins, no answer names
a version in ``Server:``, and an open gateway says so when it starts.

The same rules in a real browser: tests/test_cross_origin_page.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from typing import Any

import orjson
import pytest
import websockets

from gateway.app import warn_if_open
from gateway.responses import name_the_server
from gateway.settings import Settings, from_args, from_env
from tests.helpers import TIMEOUT, GatewayUnderTest, spawn_gateway, start_gateway, wait_for

# -- publishing: JSON only ---------------------------------------------------------------------

REFUSED_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/json, text/plain",  # not one media type
    "application/jsonx",
    None,  # no Content-Type at all
]


async def _history(gw: GatewayUnderTest, topic: str) -> list[Any]:
    async with gw.session.get(f"{gw.url}/topics/{topic}/messages") as resp:
        assert resp.status == 200
        return [m["data"] for m in (await resp.json())["messages"]]


async def _post(
    gw: GatewayUnderTest, path: str, body: bytes, content_type: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with gw.session.post(
        gw.url + path, data=body, headers=headers, skip_auto_headers=["Content-Type"]
    ) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        return resp.status, await resp.json()


@pytest.mark.parametrize("content_type", REFUSED_TYPES)
@pytest.mark.parametrize(
    ("path", "body"), [("/topics/news", b'{"x":1}'), ("/topics/news/batch", b'[{"x":1}]')]
)
async def test_publish_without_a_json_content_type_is_415_and_publishes_nothing(
    gateway: GatewayUnderTest, path: str, body: bytes, content_type: str | None
) -> None:
    status, reply = await _post(gateway, path, body, content_type)
    assert (status, reply["error"]) == (415, "unsupported_media_type")
    assert "Content-Type: application/json" in reply["message"]
    if content_type is None:
        assert "no Content-Type" in reply["message"]
    else:
        assert repr(content_type) in reply["message"]
    if path.endswith("/batch"):
        assert "application/x-ndjson" in reply["message"]
    assert await _history(gateway, "news") == []


async def test_json_and_ndjson_content_types_are_accepted(gateway: GatewayUnderTest) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        status, reply = await _post(gateway, "/topics/news", b'{"x":1}', content_type)
        assert status == 201, reply
    status, reply = await _post(gateway, "/topics/news/batch", b"[2, 3]", "application/json")
    assert status == 201, reply
    for content_type in ("application/x-ndjson", "application/x-ndjson; charset=utf-8"):
        status, reply = await _post(gateway, "/topics/news/batch", b"4\n5\n", content_type)
        assert status == 201, reply
    assert await _history(gateway, "news") == [{"x": 1}] * 3 + [2, 3, 4, 5, 4, 5]
    # One message is JSON; NDJSON lines are a batch.
    status, reply = await _post(gateway, "/topics/news", b"6\n", "application/x-ndjson")
    assert (status, reply["error"]) == (415, "unsupported_media_type")


async def test_a_refused_body_leaves_the_connection_usable(gateway: GatewayUnderTest) -> None:
    """The 415 comes before the body is read; the connection still serves the next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        body = b'{"x":1}'
        writer.write(
            b"POST /topics/news HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(TIMEOUT):
            first = await reader.readuntil(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 415 "), first
            length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            second = await reader.readuntil(b"\r\n\r\n")
            assert second.startswith(b"HTTP/1.1 200 "), second
    finally:
        writer.close()
    assert await _history(gateway, "news") == []


# -- Server: no version ------------------------------------------------------------------------


async def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes; the response head (and what came with it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(TIMEOUT):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


def _server_header(head: bytes) -> list[str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [
        v.strip() for k, _, v in (line.partition(":") for line in lines) if k.lower() == "server"
    ]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /sse/news HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"HEAD /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /topics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /static/app.js HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /static/nope.js HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /topics/nope/messages HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"PUT /topics/news HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"POST /topics/news HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 415),
        (b"GET /ws/news HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # no handshake
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),  # malformed
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # too long
        (
            b"GET /ws/news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            101,
        ),
    ],
)
async def test_every_answer_says_server_streamgate_without_a_version(
    gateway: GatewayUnderTest, request_bytes: bytes, status: int
) -> None:
    head = await _raw(gateway.port, request_bytes)
    assert head.split(b" ")[1] == str(status).encode(), head
    assert _server_header(head) == ["streamgate"], head


async def test_the_refusal_past_max_connections_names_no_version_either() -> None:
    async with start_gateway(max_connections=1, topics=("news",)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            head = await _raw(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 503 "), head
    assert _server_header(head) == ["streamgate"], head


# -- WebSocket: the Origin rule ----------------------------------------------------------------

EVIL = "https://evil.example"


def _handshake(path: str, host: str, origin: str | None = None, *extra: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *([f"Origin: {origin}"] if origin is not None else []),
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _handshake_status(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ")[1])
            body = b""
            if status != 101:
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
        return status, body
    finally:
        writer.close()


async def test_a_websocket_from_a_foreign_origin_is_refused_before_the_upgrade(
    gateway: GatewayUnderTest,
) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{gateway.ws_url}/ws/news", origin=EVIL):
            pass
    response = info.value.response
    assert response.status_code == 403
    assert "Upgrade" not in response.headers
    reply = orjson.loads(response.body)
    assert reply["error"] == "forbidden_origin"
    assert EVIL in reply["message"] and "--allowed-origins" in reply["message"]
    # the raw handshake: 403 JSON, no upgrade, no stream; even for a topic that does not exist
    for path in ("/ws/news", "/ws/nope", "/ws/count?n=abc"):
        raw = _handshake(path, f"127.0.0.1:{gateway.port}", EVIL)
        status, body = await _handshake_status(gateway.port, raw)
        assert (status, orjson.loads(body)["error"]) == (403, "forbidden_origin"), path
    assert not gateway.context.sessions
    assert gateway.context.hub.subscriber_counts("news")["ws"] == 0


async def test_websockets_without_origin_or_from_the_gateways_own_origin_are_accepted(
    gateway: GatewayUnderTest,
) -> None:
    own = f"http://127.0.0.1:{gateway.port}"
    for origin in (None, own):
        async with websockets.connect(f"{gateway.ws_url}/ws/news", origin=origin) as ws:
            await ws.send('{"type":"ping"}')
            assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "pong"


@pytest.mark.parametrize(
    ("host", "origin", "extra", "status"),
    [
        ("localhost:{port}", "http://localhost:{port}", (), 101),
        ("LocalHost:{port}", "http://localhost:{port}", (), 101),
        ("gw.example", "http://gw.example", (), 101),
        ("gw.example:80", "http://gw.example", (), 101),
        # a proxy in front terminates TLS and says so; the page is https
        ("gw.example", "https://gw.example", ("X-Forwarded-Proto: https",), 101),
        ("gw.example", "https://gw.example", (), 403),
        ("gw.example", "http://gw.example", ("X-Forwarded-Proto: https",), 403),
        ("127.0.0.1:{port}", "http://127.0.0.1:1", (), 403),  # another port
        ("127.0.0.1:{port}", "https://127.0.0.1:{port}", (), 403),  # another scheme
        ("127.0.0.1:{port}", "http://127.0.0.1.evil.example:{port}", (), 403),
        ("127.0.0.1:{port}", "null", (), 403),  # a sandboxed frame, a file: page
    ],
)
async def test_the_gateways_own_origin_is_the_scheme_host_and_port_the_request_went_to(
    gateway: GatewayUnderTest, host: str, origin: str, extra: tuple[str, ...], status: int
) -> None:
    port = gateway.port
    raw = _handshake("/ws/news", host.format(port=port), origin.format(port=port), *extra)
    assert (await _handshake_status(port, raw))[0] == status


async def test_listed_origins_may_open_websockets_and_star_allows_any() -> None:
    app = "https://app.example"
    async with start_gateway(topics=("news",), allowed_origins=(app,)) as gw:
        async with websockets.connect(f"{gw.ws_url}/ws/news", origin=app) as ws:
            await ws.send('{"type":"ping"}')
            assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "pong"
        for other in (EVIL, "https://app.example.evil.example", "http://app.example"):
            raw = _handshake("/ws/news", f"127.0.0.1:{gw.port}", other)
            assert (await _handshake_status(gw.port, raw))[0] == 403, other
    async with start_gateway(
        topics=("news",), allowed_origins=("*",), cors_credentials=False
    ) as gw:
        raw = _handshake("/ws/news", f"127.0.0.1:{gw.port}", EVIL)
        assert (await _handshake_status(gw.port, raw))[0] == 101


# -- settings ----------------------------------------------------------------------------------


def test_allowed_origins_and_cors_credentials_from_flags_and_environment() -> None:
    assert (Settings().allowed_origins, Settings().cors_credentials) == ((), True)
    env = {"STREAMGATE_ALLOWED_ORIGINS": "https://a.example, http://localhost:3000"}
    assert from_env(env).allowed_origins == ("https://a.example", "http://localhost:3000")
    s = from_args(
        ["--allowed-origins", "https://b.example", "--allowed-origins", "http://[::1]:8080"], env
    )
    assert s.allowed_origins == ("https://b.example", "http://[::1]:8080")
    for raw, value in (("false", False), ("0", False), ("No", False), ("true", True), ("on", True)):
        assert from_env({"STREAMGATE_CORS_CREDENTIALS": raw}).cors_credentials is value
        assert from_args(["--cors-credentials", raw], {}).cors_credentials is value
    assert from_args(["--cors-credentials"], {"STREAMGATE_CORS_CREDENTIALS": "0"}).cors_credentials
    s = from_args(["--allowed-origins", "*", "--cors-credentials", "false"], {})
    assert (s.allowed_origins, s.cors_credentials) == (("*",), False)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"allowed_origins": ("https://App.example",)}, "did you mean 'https://app.example'"),
        ({"allowed_origins": ("https://app.example/",)}, "did you mean 'https://app.example'"),
        ({"allowed_origins": ("https://app.example:443",)}, "did you mean 'https://app.example'"),
        ({"allowed_origins": ("http://app.example:80",)}, "did you mean 'http://app.example'"),
        ({"allowed_origins": ("app.example",)}, "scheme://host"),
        ({"allowed_origins": ("https://app.example/path",)}, "no path"),
        ({"allowed_origins": ("null",)}, "never list 'null'"),
        ({"allowed_origins": ("*",)}, "needs cors_credentials off"),
        ({"allowed_origins": ("https://a.example", "*")}, "needs cors_credentials off"),
    ],
)
def test_origins_that_would_never_match_are_refused_clearly(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings(**values)


def test_a_bad_boolean_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="STREAMGATE_CORS_CREDENTIALS"):
        from_env({"STREAMGATE_CORS_CREDENTIALS": "maybe"})
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--cors-credentials", "maybe"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "expected true or false" in proc.stderr, proc.stderr


# -- CORS ----------------------------------------------------------------------------------------

APP = "http://app.example:3000"
ACAO = "Access-Control-Allow-Origin"
ACAC = "Access-Control-Allow-Credentials"


async def _options(
    gw: GatewayUnderTest, path: str, origin: str | None, method: str | None, headers: str = ""
) -> tuple[int, Any, bytes]:
    sent = {}
    if origin is not None:
        sent["Origin"] = origin
    if method is not None:
        sent["Access-Control-Request-Method"] = method
    if headers:
        sent["Access-Control-Request-Headers"] = headers
    async with gw.session.options(gw.url + path, headers=sent) as resp:
        return resp.status, resp.headers, await resp.read()


@pytest.mark.parametrize(
    ("path", "method", "request_headers", "methods"),
    [
        ("/topics/news", "POST", "content-type", "POST, DELETE"),
        ("/topics/news", "DELETE", "authorization", "POST, DELETE"),
        ("/topics/news/batch", "POST", "content-type,authorization", "POST"),
        ("/topics/news/messages", "GET", "authorization", "GET"),
        ("/topics", "GET", "authorization", "GET"),
        ("/healthz", "GET", "authorization", "GET"),
        ("/chunked/news", "GET", "authorization", "GET"),
        ("/sse/news", "GET", "last-event-id", "GET"),
        ("/ws/news", "GET", "authorization", "GET"),
    ],
)
async def test_a_preflight_from_a_listed_origin_is_answered(
    path: str, method: str, request_headers: str, methods: str
) -> None:
    async with start_gateway(topics=("news",), allowed_origins=(APP,)) as gw:
        status, headers, body = await _options(gw, path, APP, method, request_headers)
        assert (status, body) == (204, b"")
        assert headers[ACAO] == APP
        assert headers[ACAC] == "true"
        assert headers["Access-Control-Allow-Methods"] == methods
        allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
        assert {h.strip() for h in request_headers.split(",")} <= allowed
        assert allowed == {"authorization", "content-type", "last-event-id"}
        assert int(headers["Access-Control-Max-Age"]) > 0
        assert "Origin" in headers["Vary"]
        assert headers["Server"] == "streamgate"
        # and the unlisted: 403 JSON, no CORS header
        status, headers, body = await _options(gw, path, EVIL, method, request_headers)
        assert (status, orjson.loads(body)["error"]) == (403, "forbidden_origin")
        assert ACAO not in headers and ACAC not in headers
        assert "Access-Control-Allow-Methods" not in headers


async def test_without_listed_origins_there_is_no_cors_at_all(gateway: GatewayUnderTest) -> None:
    own = gateway.url
    for origin in (EVIL, own):
        status, headers, body = await _options(gateway, "/topics/news", origin, "POST")
        assert (status, orjson.loads(body)["error"]) == (403, "forbidden_origin")  # was 405
    async with gateway.session.get(f"{gateway.url}/topics", headers={"Origin": EVIL}) as resp:
        assert resp.status == 200
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
        assert "Vary" not in resp.headers
    # a plain OPTIONS says what the route takes
    status, headers, _ = await _options(gateway, "/topics/news", None, None)
    assert (status, headers["Allow"]) == (204, "POST, DELETE, OPTIONS")
    assert gateway.running.app.on_response_prepare == [name_the_server]  # nothing else runs


async def test_answers_to_a_listed_origin_carry_cors_headers_and_others_none() -> None:
    async with start_gateway(topics=("news",), allowed_origins=(APP, "https://b.example")) as gw:
        msg_id = await gw.publish("news", {"x": 1})
        requests: list[tuple[str, str, dict[str, str]]] = [
            ("GET", "/topics", {}),
            ("GET", "/topics/news/messages", {}),
            ("GET", "/healthz", {}),
            ("GET", "/chunked/news?limit=1&since=0-0", {}),
            ("GET", "/chunked/news?format=json&limit=1&since=0-0", {}),
            ("GET", "/sse/news?limit=1&since=0-0", {}),
            ("GET", "/sse/count?n=1", {"Last-Event-ID": "0-1"}),  # 204: stop for good
            ("GET", "/topics/nope/messages", {}),  # 404
            ("POST", "/topics/news", {"Content-Type": "text/plain"}),  # 415
            ("POST", "/topics/news", {"Content-Type": "application/json"}),
        ]
        for method, path, extra in requests:
            for origin, listed in ((APP, True), ("https://b.example", True), (EVIL, False)):
                async with gw.session.request(
                    method, gw.url + path, headers={"Origin": origin, **extra}, data=b"2"
                ) as resp:
                    await resp.read()
                    assert "Origin" in resp.headers.getall("Vary", [""])[0], path
                    if listed:
                        assert resp.headers[ACAO] == origin, (path, origin)
                        assert resp.headers[ACAC] == "true"
                        assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
                    else:
                        assert ACAO not in resp.headers and ACAC not in resp.headers, path
            async with gw.session.request(method, gw.url + path, headers=extra, data=b"2") as resp:
                await resp.read()
                assert ACAO not in resp.headers and "Origin" in resp.headers["Vary"], path
        assert msg_id


async def test_credentials_off_and_any_origin() -> None:
    async with start_gateway(
        topics=("news",), allowed_origins=(APP,), cors_credentials=False
    ) as gw:
        async with gw.session.get(f"{gw.url}/topics", headers={"Origin": APP}) as resp:
            assert resp.headers[ACAO] == APP and ACAC not in resp.headers
        status, headers, _ = await _options(gw, "/topics/news", APP, "POST", "content-type")
        assert status == 204 and ACAC not in headers
    async with start_gateway(
        topics=("news",), allowed_origins=("*",), cors_credentials=False
    ) as gw:
        for origin in (APP, EVIL):
            async with gw.session.get(f"{gw.url}/topics", headers={"Origin": origin}) as resp:
                assert resp.headers[ACAO] == origin and ACAC not in resp.headers
            status, headers, _ = await _options(gw, "/topics/news", origin, "POST")
            assert (status, headers[ACAO]) == (204, origin)


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
async def test_an_idle_stream_keeps_nothing_of_cors(transport: str) -> None:
    """The CORS headers go out with the stream's headers and are dropped with them:
    the stream keeps neither the response nor the request."""
    async with start_gateway(topics=("news",), allowed_origins=(APP,)) as gw:
        if transport == "ws":
            async with websockets.connect(f"{gw.ws_url}/ws/news", origin=APP) as ws:
                assert ws.response.headers[ACAO] == APP
                await wait_for(lambda: len(gw.context.sessions) == 1)
                (sink,) = gw.context.sessions
                assert sink.credentials is None  # the handshake, headers and all, is let go
        else:
            async with gw.session.get(
                f"{gw.url}/{transport}/news", headers={"Origin": APP}
            ) as resp:
                assert resp.headers[ACAO] == APP
                await wait_for(lambda: len(gw.context.sessions) == 1)
                (sink,) = gw.context.sessions
                assert not hasattr(sink, "response") and not hasattr(sink, "request")


# -- the start-up warning ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "where"),
    [
        ("0.0.0.0", "0.0.0.0:8080, every interface"),
        ("::", "[::]:8080, every interface"),
        ("127.0.0.1", "127.0.0.1:8080, this machine only"),
        ("::1", "[::1]:8080, this machine only"),
        ("localhost", "localhost:8080, this machine only"),
        ("192.0.2.10", "192.0.2.10:8080 ("),
    ],
)
def test_an_open_gateway_says_so_in_one_warning(
    caplog: pytest.LogCaptureFixture, host: str, where: str
) -> None:
    caplog.set_level(logging.INFO)
    assert warn_if_open(Settings(host=host)) is True
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "anyone who can reach the gateway may publish" in text and "read" in text
    assert f"listens on {where}" in text
    # The way to keep it to this machine, unless it is kept there already.
    assert ("--host 127.0.0.1" in text) is not where.endswith("this machine only")


async def test_serve_logs_the_warning_once() -> None:
    async with spawn_gateway() as gw:
        pass
    lines = [line for line in gw.stderr.decode().splitlines() if "no access control" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], gw.stderr
    assert f"127.0.0.1:{gw.port}, this machine only" in lines[0]


async def test_a_locked_gateway_does_not_warn() -> None:
    async with spawn_gateway("--auth-key", "k" * 32) as gw:
        pass
    assert b"no access control" not in gw.stderr, gw.stderr
    assert warn_if_open(Settings(auth_url="http://127.0.0.1:1/check")) is False
