"""Access control with tokens: every entry point refuses what it must (401 vs
403 exactly), accepts a good token from each carrier, and ends a stream when
its token expires. Real gateways on loopback, real clients, real tokens made
with PyJWT: HS256 with a secret, RS256 with a key generated here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict
from websockets.asyncio.client import ClientConnection

from gateway.auth import Grant
from tests.helpers import TIMEOUT, GatewayUnderTest, spawn_gateway, start_gateway, wait_for
from tests.wire import read_until

SECRET = "a test secret that is well over thirty-two bytes"
AUD = "streamgate-tests"
ISS = "https://issuer.test"


@dataclass
class Keys:
    """What the gateway is given (``setting``) and what signs tokens."""

    name: str
    setting: str
    signing: Any
    alg: str
    wrong: Any
    """Another key of the same kind: its tokens must not verify."""

    def token(self, key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "sub": "user-42",
            "aud": AUD,
            "iss": ISS,
            "iat": now,
            "exp": now + 300,
            "streamgate": {"subscribe": ["news", "user.42.*"], "publish": ["news"]},
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.signing if key is None else key, algorithm=self.alg)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_public_pem(key: Any, path: Path) -> str:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.write_bytes(pem)
    return str(path)


@pytest.fixture(params=["HS256", "RS256"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> Keys:
    if request.param == "HS256":
        return Keys("HS256", SECRET, SECRET, "HS256", "another secret, also over thirty-two bytes")
    private = rsa_key()
    return Keys(
        "RS256", write_public_pem(private, tmp_path / "public.pem"), private, "RS256", rsa_key()
    )


@contextlib.asynccontextmanager
async def gateway_with(keys: Keys, **settings: Any) -> AsyncIterator[GatewayUnderTest]:
    values: dict[str, Any] = {
        "auth_key": keys.setting,
        "auth_audience": AUD,
        "auth_issuer": ISS,
        "auth_leeway": 0,
        "topics": ("news", "user.42.inbox", "user.43.inbox"),
    }
    values.update(settings)
    async with start_gateway(**values) as gw:
        await gw.context.broker.publish("news", [b'{"n":1}'])
        yield gw


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- every entry point, every bad token ------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: dict[str, Any]


async def attempt(gw: GatewayUnderTest, endpoint: str, headers: dict[str, str]) -> Answer:
    """One request to ``endpoint`` ("GET /sse/news", "WS /ws/news", ...): its
    status, headers and JSON body (a stream that starts is closed at once)."""
    method, path = endpoint.split(" ")
    if method == "WS":
        try:
            async with websockets.connect(gw.ws_url + path, additional_headers=headers):
                return Answer(101, CIMultiDict(), {})
        except websockets.InvalidStatus as exc:
            resp = exc.response
            headers = CIMultiDict(resp.headers.raw_items())
            return Answer(resp.status_code, headers, json.loads(resp.body or b"{}"))
    body: dict[str, Any] = {}
    kwargs: dict[str, Any] = {"headers": headers}
    if method == "POST":
        kwargs["json"] = [1, 2] if path.endswith("/batch") else {"x": 1}
    async with gw.session.request(method, gw.url + path, **kwargs) as resp:
        if resp.content_type == "application/json" and not path.startswith("/chunked"):
            body = await resp.json()
        elif resp.status != 200:
            body = await resp.json(content_type=None)
        return Answer(resp.status, CIMultiDict(resp.headers), body)


ENDPOINTS = [
    "GET /chunked/news",
    "GET /sse/news",
    "WS /ws/news",
    "GET /topics/news/messages",
    "POST /topics/news",
    "POST /topics/news/batch",
    "DELETE /topics/news",
]

BAD_TOKENS: dict[str, tuple[int, Any]] = {
    # name: (status, how to make the Authorization value from Keys)
    "missing": (401, None),
    "malformed": (401, lambda k: "not-a-token"),
    "expired": (401, lambda k: k.token(exp=int(time.time()) - 30)),
    "not yet valid": (401, lambda k: k.token(nbf=int(time.time()) + 300)),
    "wrong audience": (401, lambda k: k.token(aud="someone-else")),
    "wrong issuer": (401, lambda k: k.token(iss="https://evil.test")),
    "wrong signature": (401, lambda k: k.token(key=k.wrong)),
    "no right": (403, lambda k: k.token(streamgate={"subscribe": ["other"], "publish": []})),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_every_entry_point_refuses_a_bad_token(keys: Keys, case: str) -> None:
    status, make = BAD_TOKENS[case]
    headers = {} if make is None else bearer(make(keys))
    async with gateway_with(keys) as gw:
        for endpoint in ENDPOINTS:
            answer = await attempt(gw, endpoint, headers)
            where = f"{keys.name} {case}: {endpoint}"
            assert answer.status == status, (where, answer)
            assert answer.body["error"] == ("unauthorized" if status == 401 else "forbidden"), where
            challenge = answer.headers.get("WWW-Authenticate", "")
            if status == 401:
                assert challenge.startswith("Bearer"), where
                # RFC 6750 section 3.1: no error code when no credential came at all.
                assert ("invalid_token" in challenge) == (make is not None), where
            else:
                assert not challenge, where
        # Nothing was published or deleted on the way.
        assert await gw.context.broker.has_topic("news")
        read = await gw.context.broker.read("news", None, 10)
        assert len(read.messages) == 1


async def test_the_good_token_opens_every_entry_point(keys: Keys) -> None:
    token = keys.token()
    async with gateway_with(keys) as gw:
        expected = {"POST": 201, "DELETE": 200, "GET": 200, "WS": 101}
        for endpoint in ENDPOINTS:
            answer = await attempt(gw, endpoint, bearer(token))
            assert answer.status == expected[endpoint.split(" ")[0]], (endpoint, answer)


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
@pytest.mark.parametrize("carrier", ["header", "cookie", "query"])
async def test_each_carrier_on_each_transport(keys: Keys, transport: str, carrier: str) -> None:
    token = keys.token()
    headers: dict[str, str] = {}
    query = "since=0-0"
    if carrier == "header":
        headers = bearer(token)
    elif carrier == "cookie":
        headers = {"Cookie": f"theme=dark; streamgate_token={token}"}
    else:
        query += f"&token={token}"
    async with gateway_with(keys) as gw:
        reader = await read_until(gw.url, transport, "news", count=1, query=query, headers=headers)
        assert [m.obj["data"] for m in reader.messages] == [{"n": 1}]
        # And a publish with the same carrier.
        url = f"{gw.url}/topics/news" + (f"?token={token}" if carrier == "query" else "")
        async with gw.session.post(url, json={"via": carrier}, headers=headers) as resp:
            assert resp.status == 201, await resp.text()


async def test_the_header_wins_over_the_cookie_and_the_query(keys: Keys) -> None:
    good, bad = keys.token(), keys.token(key=keys.wrong)
    async with gateway_with(keys) as gw:
        cookie = {"Cookie": f"streamgate_token={bad}"}
        assert (await attempt(gw, f"GET /topics/news/messages?token={bad}", cookie)).status == 401
        headers = {**bearer(good), **cookie}
        answer = await attempt(gw, f"GET /topics/news/messages?token={bad}", headers)
        assert answer.status == 200
        cookie = {"Cookie": f"streamgate_token={good}"}
        answer = await attempt(gw, f"GET /topics/news/messages?token={bad}", cookie)
        assert answer.status == 200
        # A scheme other than Bearer is not a token: the next carrier is used.
        basic = {"Authorization": "Basic dXNlcjpwYXNz"}
        answer = await attempt(gw, f"GET /topics/news/messages?token={good}", basic)
        assert answer.status == 200


async def test_curl_with_a_cookie(keys: Keys) -> None:
    async with gateway_with(keys) as gw:
        token = keys.token()
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "-N",
            "--max-time",
            str(TIMEOUT),
            "--cookie",
            f"streamgate_token={token}",
            f"{gw.url}/chunked/news?since=0-0&limit=1",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        lines = [orjson.loads(line) for line in out.splitlines() if line.strip()]
        assert lines[0]["data"] == {"n": 1}
        assert lines[-1] == {"type": "end", "reason": "limit", "last_id": lines[0]["id"]}
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-i", f"{gw.url}/chunked/news", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        head = out.decode().lower()
        assert head.startswith("http/1.1 401")
        assert 'www-authenticate: bearer realm="streamgate"' in head


async def test_the_query_token_is_not_passed_to_a_per_connection_stream(keys: Keys) -> None:
    token = keys.token(streamgate={"subscribe": ["count"]})
    async with gateway_with(keys) as gw:
        # count() takes n and interval only: a token= passed on would be 400 bad_params.
        reader = await read_until(gw.url, "chunked", "count", query=f"n=2&token={token}")
        assert [m.obj["data"] for m in reader.messages] == [{"n": 1}, {"n": 2}]
        assert (await attempt(gw, "GET /chunked/count?n=2", {})).status == 401


# -- order: 400, then 401/403, then 404 --------------------------------------------------------


async def test_validation_then_access_then_the_topic(keys: Keys) -> None:
    everything = keys.token(streamgate={"subscribe": ["*"], "publish": ["*"]})
    async with gateway_with(keys) as gw:
        for transport in ("chunked", "sse"):
            assert (await attempt(gw, f"GET /{transport}/bad%20name", {})).status == 400
            # No token: the client cannot tell a missing topic from a present one.
            assert (await attempt(gw, f"GET /{transport}/nope", {})).status == 401
            assert (await attempt(gw, f"GET /{transport}/news", {})).status == 401
        assert not await gw.context.broker.has_topic("nope")  # no right, no topic
        for transport in ("chunked", "sse"):
            # With the right, a stream of a topic not yet published to waits for it.
            assert (await attempt(gw, f"GET /{transport}/nope", bearer(everything))).status == 200
        assert (await attempt(gw, "WS /ws/nope2", {})).status == 401
        assert not await gw.context.broker.has_topic("nope2")
        assert (await attempt(gw, "WS /ws/nope2", bearer(everything))).status == 101
        assert (await attempt(gw, "GET /topics/nope3/messages", {})).status == 401
        assert (await attempt(gw, "GET /topics/nope3/messages", bearer(everything))).status == 404
        assert (await attempt(gw, "DELETE /topics/nope3", {})).status == 401
        assert (await attempt(gw, "DELETE /topics/nope3", bearer(everything))).status == 404
        # Publishing to a per-connection stream: the right first, then 409.
        assert (await attempt(gw, "POST /topics/count", {})).status == 401
        assert (await attempt(gw, "POST /topics/count", bearer(everything))).status == 409
        # Creating a topic by publishing needs the publish right on it.
        news_only = bearer(keys.token())
        assert (await attempt(gw, "POST /topics/fresh", news_only)).status == 403
        assert not await gw.context.broker.has_topic("fresh")
        assert (await attempt(gw, "POST /topics/fresh", bearer(everything))).status == 201
        # /healthz stays open.
        assert (await attempt(gw, "GET /healthz", {})).status == 200


# -- rights: globs, anonymous topics, the topic list -------------------------------------------


async def test_rights_globs(keys: Keys) -> None:
    async with gateway_with(keys) as gw:
        user42 = bearer(keys.token())
        assert (await attempt(gw, "GET /sse/user.42.inbox", user42)).status == 200
        assert (await attempt(gw, "GET /sse/user.43.inbox", user42)).status == 403
        assert (await attempt(gw, "GET /sse/user.42", user42)).status == 403
        assert (await attempt(gw, "POST /topics/user.42.inbox", user42)).status == 403
        star = bearer(keys.token(streamgate={"subscribe": ["*"]}))
        assert (await attempt(gw, "GET /sse/user.43.inbox", star)).status == 200
        assert (await attempt(gw, "POST /topics/news", star)).status == 403
        one_char = bearer(keys.token(streamgate={"subscribe": ["user.4?.inbox"]}))
        assert (await attempt(gw, "GET /sse/user.43.inbox", one_char)).status == 200


async def test_anonymous_subscribe_patterns(keys: Keys) -> None:
    async with gateway_with(
        keys, anonymous_subscribe=("news", "public.*"), topics=("news", "public.a", "private")
    ) as gw:
        assert (await attempt(gw, "GET /chunked/news", {})).status == 200
        assert (await attempt(gw, "GET /sse/public.a", {})).status == 200
        assert (await attempt(gw, "WS /ws/public.a", {})).status == 101
        assert (await attempt(gw, "GET /topics/public.a/messages", {})).status == 200
        assert (await attempt(gw, "GET /chunked/private", {})).status == 401
        # Reading only: publishing still needs a token.
        assert (await attempt(gw, "POST /topics/public.a", {})).status == 401
        # An invalid token does not shut a client out of a public topic.
        expired = bearer(keys.token(exp=int(time.time()) - 30))
        assert (await attempt(gw, "GET /sse/public.a", expired)).status == 200
        # The list: what the caller may read.
        async with gw.session.get(f"{gw.url}/topics") as resp:
            assert resp.status == 200
            names = [t["name"] for t in (await resp.json())["topics"]]
            assert sorted(names) == ["news", "public.a"]


async def test_the_topic_list_follows_the_credential(keys: Keys) -> None:
    async with gateway_with(keys) as gw:
        answer = await attempt(gw, "GET /topics", {})
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await attempt(gw, "GET /topics", bearer(keys.token(key=keys.wrong)))).status == 401
        answer = await attempt(gw, "GET /topics", bearer(keys.token()))
        assert answer.status == 200
        assert sorted(t["name"] for t in answer.body["topics"]) == ["news", "user.42.inbox"]
        assert answer.body["streams"] == []
        nothing = bearer(keys.token(streamgate={}))
        answer = await attempt(gw, "GET /topics", nothing)
        assert (answer.status, answer.body["topics"]) == (200, [])
        star = bearer(keys.token(streamgate={"subscribe": ["*"]}))
        answer = await attempt(gw, "GET /topics", star)
        assert len(answer.body["topics"]) == 3
        assert answer.body["streams"] == [{"name": "count", "kind": "per-connection"}]


# -- the WebSocket publish command -------------------------------------------------------------


async def command(conn: ClientConnection, obj: dict[str, Any]) -> dict[str, Any]:
    await conn.send(orjson.dumps(obj).decode())
    while True:
        frame = orjson.loads(await asyncio.wait_for(conn.recv(), TIMEOUT))
        if frame.get("type") in ("error", "published", "pong"):
            return dict(frame)


async def test_ws_publish_is_checked_with_the_handshake_credentials(keys: Keys) -> None:
    async with gateway_with(keys) as gw:
        reader = bearer(keys.token(streamgate={"subscribe": ["news"]}))
        async with websockets.connect(f"{gw.ws_url}/ws/news", additional_headers=reader) as conn:
            reply = await command(conn, {"type": "publish", "data": {"x": 1}, "ref": 7})
            assert (reply["type"], reply["code"], reply["ref"]) == ("error", "forbidden", 7)
            assert (await command(conn, {"type": "ping"}))["type"] == "pong"  # still open
        token = keys.token()
        async with websockets.connect(
            f"{gw.ws_url}/ws/news", additional_headers=bearer(token)
        ) as conn:
            for i in range(3):  # the decoded token is cached: one decode for all of them
                reply = await command(conn, {"type": "publish", "data": {"i": i}})
                assert reply["type"] == "published", reply
            # The stream keeps the token it was opened with, not the handshake request.
            (stream,) = [s for s in gw.context.sessions if s.transport_name == "ws"]
            assert stream.credentials.request is None and stream.credentials.token == token
        assert len(gw.context.auth._tokens) == 2
        # An anonymous reader (no token at all) is refused the same way.
    async with gateway_with(keys, anonymous_subscribe=("news",)) as gw:
        async with websockets.connect(f"{gw.ws_url}/ws/news") as conn:
            reply = await command(conn, {"type": "publish", "data": 1})
            assert (reply["type"], reply["code"]) == ("error", "forbidden")
            assert (await command(conn, {"type": "ping"}))["type"] == "pong"


# -- expiry mid-stream -------------------------------------------------------------------------


async def test_streams_end_when_their_token_expires(keys: Keys) -> None:
    async with gateway_with(keys) as gw:
        token = keys.token(exp=int(time.time()) + 2)
        headers = bearer(token)
        started = time.monotonic()
        readers = await asyncio.gather(
            *(
                read_until(gw.url, t, "news", headers=headers, within=TIMEOUT)
                for t in ("chunked", "sse", "ws")
            )
        )
        elapsed = time.monotonic() - started
        assert 0.5 < elapsed < 4 + TIMEOUT / 10, elapsed
        for reader in readers:
            goodbye = reader.controls[-1]
            assert (goodbye["type"], goodbye["reason"]) == ("goodbye", "token_expired"), reader
        ws = readers[2]
        assert (ws.close_code, ws.close_reason) == (4003, "token_expired")
        assert gw.context.disconnects["token_expired"] == 3
        # Reconnecting with the expired token: 401, and the cache lets go of it.
        assert token in gw.context.auth._tokens
        assert (await attempt(gw, "GET /sse/news", headers)).status == 401
        assert token not in gw.context.auth._tokens
        assert (await attempt(gw, "WS /ws/news", headers)).status == 401


async def test_a_stream_without_exp_has_no_timer(keys: Keys) -> None:
    async with gateway_with(keys) as gw:
        headers = bearer(keys.token(exp=None))
        async with gw.session.get(f"{gw.url}/chunked/news", headers=headers) as resp:
            assert resp.status == 200
            await wait_for(lambda: len(gw.context.sessions) == 1)
            (stream,) = gw.context.sessions
            assert stream._expiry is None
        expiring = bearer(keys.token())
        async with gw.session.get(f"{gw.url}/chunked/news", headers=expiring) as resp:
            await wait_for(lambda: len(gw.context.sessions) == 1)
            (stream,) = gw.context.sessions
            assert stream._expiry is not None


# -- other keys: ES256 in a JWKS, chosen by kid ------------------------------------------------


async def test_a_jwks_file_with_ec_keys(tmp_path: Path) -> None:
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": []}
    for kid, key in (("one", first), ("two", second)):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwks["keys"].append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    claims = {"aud": AUD, "iss": ISS, "streamgate": {"subscribe": ["news"]}}
    keys = Keys("ES256", str(path), first, "ES256", second)
    async with gateway_with(keys) as gw:
        for kid, key, status in (("one", first, 200), ("two", second, 200), ("two", first, 401)):
            token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
            answer = await attempt(gw, "GET /topics/news/messages", bearer(token))
            assert answer.status == status, kid
        unknown = jwt.encode(claims, first, algorithm="ES256", headers={"kid": "three"})
        assert (await attempt(gw, "GET /topics/news/messages", bearer(unknown))).status == 401


def test_bad_keys_are_refused_at_start(tmp_path: Path) -> None:
    from gateway.auth import Auth
    from gateway.settings import Settings

    with pytest.raises(ValueError, match="at least 32 bytes"):
        Auth(Settings(auth_key="short"))
    with pytest.raises(ValueError, match="no such key file"):
        Auth(Settings(auth_key=str(tmp_path / "missing.pem")))
    private = tmp_path / "private.pem"
    private.write_bytes(
        rsa_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="private key"):
        Auth(Settings(auth_key=str(private)))
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    assert Auth(Settings(auth_key=str(secret_file)))._key is not None


# -- the embedding application's own check -----------------------------------------------------


async def test_an_authorize_callable_decides_what_no_token_did(keys: Keys) -> None:
    asked: list[tuple[str, str]] = []

    async def authorize(request: Any, topic: str, action: str) -> bool:
        asked.append((topic, action))
        return request.headers.get("X-User") == "alice"

    async with start_gateway(
        authorize=authorize, auth_key=keys.setting, auth_audience=AUD, topics=("news",)
    ) as gw:
        assert (await attempt(gw, "GET /sse/news", {"X-User": "alice"})).status == 200
        assert (await attempt(gw, "GET /sse/news", {"X-User": "bob"})).status == 403
        assert (await attempt(gw, "POST /topics/news", {"X-User": "alice"})).status == 201
        # A token the key verifies decides by itself.
        token = keys.token(iss=None, streamgate={"subscribe": ["news"]})
        assert (await attempt(gw, "GET /sse/news", bearer(token))).status == 200
        assert asked == [("news", "subscribe"), ("news", "subscribe"), ("news", "publish")]
    # Alone, with a plain function.
    async with start_gateway(authorize=lambda r, t, a: t == "news", topics=("news", "x")) as gw:
        assert gw.context.auth.enabled
        assert (await attempt(gw, "GET /chunked/news", {})).status == 200
        assert (await attempt(gw, "GET /chunked/x", {})).status == 403


def test_grant_is_small_and_frozen() -> None:
    grant = Grant("user-42", 1.0)
    assert not hasattr(grant, "__dict__")
    with pytest.raises(AttributeError):
        grant.subject = "x"  # type: ignore[misc]


async def test_the_startup_log_names_the_sources_never_the_secret(tmp_path: Path) -> None:
    async with spawn_gateway(
        "--auth-key",
        SECRET,
        "--auth-url",
        "http://user:hunter2@127.0.0.1:9/check?key=also-secret",
        "--anonymous-subscribe",
        "public.*",
    ) as gw:
        pass
    log = gw.stderr.decode()
    assert "access control on: tokens (HS256 secret (48 bytes, from the setting))" in log, log
    assert "--auth-url http://127.0.0.1:9/check (timeout 2 s, answers kept 5 s)" in log
    assert "anonymous reading of public.*" in log
    assert "limits per client: 100 publishes a second, 256 streams per address" in log
    for secret in (SECRET, "hunter2", "also-secret"):
        assert secret not in log
    pem = write_public_pem(rsa_key(), tmp_path / "public.pem")
    async with spawn_gateway("--auth-key", pem) as gw:
        pass
    assert f"tokens (RS256 public key from {pem})" in gw.stderr.decode()


def test_without_a_key_the_token_libraries_are_not_loaded() -> None:
    """PyJWT and cryptography cost about 9 MiB of RSS: a gateway without
    --auth-key does not import them (gateway/tokens.py is loaded lazily)."""
    import subprocess
    import sys

    code = (
        "import sys; from gateway.app import build_app; from gateway.settings import Settings; "
        "build_app(Settings()); print(sorted(m for m in ('jwt', 'cryptography') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(("method", "suffix"), [("POST", ""), ("POST", "/batch"), ("DELETE", "")])
async def test_a_write_checks_the_topic_then_the_right_then_what_the_topic_is(
    method: str, suffix: str
) -> None:
    """Publish, batch and delete: a malformed topic is 400 before any token is
    asked for, a missing or short right is 401/403 before the topic is said to
    be a per-connection stream (409), and only a right to it hears that; a
    right to a topic gets the handler's own answer."""
    keys = Keys("HS256", SECRET, SECRET, "HS256", None)
    writer = keys.token(streamgate={"publish": ["count", "news"]})
    reader = keys.token(streamgate={"subscribe": ["count", "news"]})
    async with gateway_with(keys) as gw:

        async def answer(topic: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers.update(bearer(token))
            url = f"{gw.url}/topics/{topic}{suffix}"
            data = b"[1]" if suffix else b"1"
            async with gw.session.request(method, url, data=data, headers=headers) as r:
                return r.status, await r.json()

        async def error(topic: str, token: str | None = None) -> tuple[int, str]:
            status, body = await answer(topic, token)
            return status, body["error"]

        assert await error("-bad") == (400, "bad_topic")
        assert await error("count") == (401, "unauthorized")
        assert await error("count", reader) == (403, "forbidden")
        assert await error("count", writer) == (409, "not_a_topic")
        status, body = await answer("news", writer)
        assert (status, body["topic"]) == ((200, "news") if method == "DELETE" else (201, "news"))
