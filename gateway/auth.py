"""Access control: who may subscribe to or publish on which topic.

One decision point, :meth:`Auth.check`, which every entry point calls (every
stream before its response starts, every publish, delete and history read, each
WebSocket ``publish`` command, and ``GET /topics`` for each topic it lists).
It returns a :class:`Grant` (who, and until when) or raises
:class:`~gateway.errors.Unauthorized` (401: no credential, or one that is not
valid), :class:`~gateway.errors.Forbidden` (403: a valid one that does not
allow this) or :class:`~gateway.errors.Unavailable` (503 ``auth_unavailable``:
the application could not be asked).

With nothing configured it returns :data:`OPEN` after one attribute test.
Otherwise it consults these sources, in this order, and the first that has
an answer decides:

1. ``--anonymous-subscribe`` patterns: reading a matching topic is allowed,
   with or without a credential (nothing else is looked at, so an expired
   token does not end a stream on a public topic).
2. A token (``--auth-key``), taken from the first carrier present:
   ``Authorization: Bearer``, the ``--auth-cookie`` cookie, ``?token=``. A
   token whose signature the key verifies decides: its claims allow the action
   on the topic (the grant carries its ``sub`` and its ``exp``) or 403; one
   that is expired, not yet valid, or for another audience or issuer is 401.
   A token the key does not verify (malformed, signed by someone else) is 401,
   unless the application is there to be asked (3 or 4), which then sees it.
3. ``--auth-url``: the application answers (:class:`AppCheck`).
4. ``authorize(request, topic, action)``, the embedding application's own
   callable (sync or async): True allows (``Grant(None, None)``), False is 403,
   an exception is 503. It is the in-process alternative to ``--auth-url``:
   give one or the other.

Nothing answered (a key, and no token): 401.

Decoded tokens are cached (:data:`TOKEN_CACHE_SIZE`, least recently used out,
each dropped when it expires), so a WebSocket's check of each ``publish``
command, or a client reconnecting with the same token, costs a dictionary
lookup and a pattern match, not a signature check.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import inspect
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from .errors import Forbidden, StreamgateError, Unauthorized, Unavailable
from .quota import Quota
from .settings import Settings

__all__ = [
    "OPEN",
    "TOKEN_CACHE_SIZE",
    "Action",
    "AppCheck",
    "Auth",
    "Authorize",
    "Credentials",
    "Grant",
    "Rights",
]

log = logging.getLogger("gateway.auth")

Action = Literal["subscribe", "publish"]
Authorize = Callable[[web.Request, str, Action], "bool | Awaitable[bool]"]
"""An embedding application's own check: True allows, False is 403."""

TOKEN_CACHE_SIZE = 4096
"""Decoded tokens kept (each about 1 KiB with its string)."""
TOKEN_CACHE_MAX_CHARS = 4096
"""A longer token is verified every time rather than kept (the cache stays under
16 MiB whatever the tokens hold; a usual token is well under 1 KiB)."""
APP_CACHE_SIZE = 10_000
"""``--auth-url`` answers kept."""
APP_CONNECTIONS = 64
"""Requests in flight to ``--auth-url`` at once; more wait (within the timeout)."""
APP_ANSWER_BYTES = 64 * 1024
"""The most of an ``--auth-url`` answer's body that is read (for ``sub``/``exp``)."""
LIST_CONCURRENCY = 16
"""``GET /topics``: topics checked at once (with ``--auth-url``, requests)."""
HMAC_MIN_BYTES = 32
"""RFC 7518 section 3.2: an HS256 key is at least as long as the hash (256 bits)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a check allowed: who (the token's ``sub``, or what the application
    said), and until when (Unix time; a stream ends then with ``token_expired``)."""

    subject: str | None
    expires_at: float | None


OPEN = Grant(None, None)
"""The grant when access control is off, or for an anonymous topic."""


# -- rights ------------------------------------------------------------------------------------


class Rights:
    """Topic globs (fnmatch, case-sensitive): ``news``, ``user.42.*``, ``*``."""

    __slots__ = ("everything", "exact", "pattern", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = patterns = tuple(patterns)
        self.everything = "*" in patterns
        self.exact = frozenset(p for p in patterns if not _is_glob(p))
        globs = [p for p in patterns if _is_glob(p)]
        self.pattern = (
            re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in globs)) if globs else None
        )

    def allows(self, topic: str) -> bool:
        if self.everything or topic in self.exact:
            return True
        pattern = self.pattern
        return pattern is not None and pattern.match(topic) is not None

    def __bool__(self) -> bool:
        return bool(self.patterns)


def _is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern or "[" in pattern


@functools.lru_cache(maxsize=1024)
def _rights(patterns: tuple[str, ...]) -> Rights:
    """Tokens share their rights lists: compile each list once."""
    return Rights(patterns)


# -- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claims:
    grant: Grant
    subscribe: Rights
    publish: Rights


class _NotVerified(Exception):
    """The key does not verify this token (malformed, or signed by another key)."""


class _TokenInvalid(Exception):
    """A verified token that is not valid now (expired, not yet, wrong aud or
    iss); the message says which."""


def _claims(payload: dict[str, Any], leeway: float) -> _Claims:
    subject = payload.get("sub")
    exp = payload.get("exp")
    rights = payload.get("streamgate", {})
    if not isinstance(rights, dict):
        raise _BadClaim('the "streamgate" claim is not an object')
    lists = []
    for action in ("subscribe", "publish"):
        patterns = rights.get(action, [])
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise _BadClaim(f'"streamgate.{action}" is not a list of topic patterns')
        lists.append(_rights(tuple(patterns)))
    grant = Grant(
        subject if isinstance(subject, str) else None,
        float(exp) + leeway if exp is not None else None,
    )
    return _Claims(grant, lists[0], lists[1])


class _BadClaim(Exception):
    pass


_INVALID = {"WWW-Authenticate": 'Bearer realm="streamgate", error="invalid_token"'}


def _invalid(message: str) -> Unauthorized:
    return Unauthorized(message, headers=_INVALID)


# -- the application's answer ------------------------------------------------------------------

_Answer = Grant | int
"""A cached answer: the grant, or the refusal's status (401, 403); 503 is never kept."""


class AppCheck:
    """``--auth-url``: ask the application (the Nchan / Centrifugo-proxy way).

    The request: ``POST <url>`` with the JSON body ``{"topic": ..., "action":
    "subscribe" | "publish"}``, the same two as ``X-Streamgate-Topic`` and
    ``X-Streamgate-Action`` headers, and the client's own ``Cookie`` and
    ``Authorization`` headers as it sent them (a ``?token=`` as
    ``X-Streamgate-Token``). No redirect is followed and no cookie is kept.

    The answer: 2xx allows; a JSON object in it may give ``sub`` (a string) and
    ``exp`` (Unix time, when the stream ends). 401 and 403 refuse with that
    status. Anything else, no answer within ``--auth-url-timeout``, or no
    connection is 503 ``auth_unavailable``.

    Answers (allow, 401, 403) are kept ``--auth-cache-ttl`` seconds per
    (Authorization, Cookie, token, topic, action), at most
    :data:`APP_CACHE_SIZE`; identical questions in flight at once share one
    request.
    """

    __slots__ = ("_cache", "_failed", "_pending", "_session", "timeout", "ttl", "url")

    def __init__(self, url: str, *, timeout: float, ttl: float) -> None:
        self.url = url
        self.timeout = timeout
        self.ttl = ttl
        self._session: aiohttp.ClientSession | None = None
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, _Answer]] = OrderedDict()
        self._pending: dict[tuple[Any, ...], asyncio.Task[_Answer | None]] = {}
        self._failed = 0

    @property
    def describe(self) -> str:
        u = URL(self.url)
        shown = f"{u.scheme}://{u.host}:{u.port}{u.path}"  # no credentials, no query
        return f"{shown} (timeout {self.timeout:g} s, answers kept {self.ttl:g} s)"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=APP_CONNECTIONS),
            cookie_jar=aiohttp.DummyCookieJar(),  # never one client's cookie for another
        )

    async def close(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ask(self, request: web.BaseRequest, topic: str, action: Action) -> Grant:
        headers = request.headers
        token = request.query.get("token") if request.rel_url.raw_query_string else None
        key = (headers.get("Authorization"), headers.get("Cookie"), token, topic, action)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                return _decide(hit[1], topic, action)
            del self._cache[key]
        task = self._pending.get(key)
        if task is None:
            task = self._pending[key] = asyncio.ensure_future(self._fetch(key))
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        # shield: a client that goes away does not cancel the others' answer.
        answer = await asyncio.shield(task)
        if answer is None:
            raise Unavailable(
                "the access check is unavailable (the application did not answer); try again",
                code="auth_unavailable",
            )
        return _decide(answer, topic, action)

    async def _fetch(self, key: tuple[Any, ...]) -> _Answer | None:
        authorization, cookie, token, topic, action = key
        headers = {
            "Content-Type": "application/json",
            "X-Streamgate-Topic": topic,
            "X-Streamgate-Action": action,
        }
        if authorization is not None:
            headers["Authorization"] = authorization
        if cookie is not None:
            headers["Cookie"] = cookie
        if token is not None:
            headers["X-Streamgate-Token"] = token
        session = self._session
        if session is None:
            return None
        answer: _Answer
        try:
            async with session.post(
                self.url,
                data=orjson.dumps({"topic": topic, "action": action}),
                headers=headers,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                if 200 <= status < 300:
                    answer = _grant_from(await _read_some(resp))
                elif status in (401, 403):
                    answer = status
                else:
                    self._failure(f"answered {status}")
                    return None
        except TimeoutError:
            self._failure(f"no answer within {self.timeout:g} s")
            return None
        except (aiohttp.ClientError, OSError) as exc:
            self._failure(f"{type(exc).__name__}: {exc}")
            return None
        if self.ttl > 0:
            cache = self._cache
            now = time.monotonic()
            while cache and (len(cache) >= APP_CACHE_SIZE or next(iter(cache.values()))[0] <= now):
                cache.popitem(last=False)
            cache[key] = (now + self.ttl, answer)
        return answer

    def _failure(self, detail: str) -> None:
        self._failed += 1
        # One line per failure would flood the log when the application is down.
        if self._failed == 1 or self._failed % 1000 == 0:
            log.warning("--auth-url check failed (%d so far): %s", self._failed, detail)


async def _read_some(resp: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > APP_ANSWER_BYTES:
            return b""  # too large to be the small JSON expected: ignore it
    return bytes(body)


def _grant_from(body: bytes) -> Grant:
    """``{"sub": ..., "exp": ...}`` from a 2xx answer; any other body is a plain yes."""
    try:
        doc = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return OPEN
    sub = doc.get("sub")
    exp = doc.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        exp = None
    return Grant(sub if isinstance(sub, str) else None, None if exp is None else float(exp))


def _decide(answer: _Answer, topic: str, action: Action) -> Grant:
    if isinstance(answer, Grant):
        if answer.expires_at is not None and answer.expires_at <= time.time():
            raise _invalid("the application's grant has expired (exp)")
        return answer
    if answer == 401:
        raise Unauthorized(f"the application refused {action} on {topic!r} (401)")
    raise Forbidden(f"the application refused {action} on {topic!r} (403)")


# -- the decision point ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """What :meth:`Auth.check_publish` needs of a connection's opening request
    (:meth:`Auth.credentials`): a few strings, or the request itself."""

    request: web.Request | None
    token: str | None
    address: str
    """The client's address, as ``--publish-rate`` counts it ("" when off)."""


class Auth:
    """Access control: :meth:`check`, and the per-client limits (:attr:`quota`).

    ``authorize`` is an embedding application's own check, called as
    ``authorize(request, topic, action)`` (a bool, or an awaitable of one) for
    every stream and publish a token has not decided: True allows, False is
    403. It takes the place of ``--auth-url`` (give one or the other).
    """

    __slots__ = (
        "_anonymous",
        "_app",
        "_authorize",
        "_cookie",
        "_key",
        "_off",
        "_tokens",
        "enabled",
        "quota",
    )

    def __init__(self, settings: Settings, *, authorize: Authorize | None = None) -> None:
        if settings.auth_key:
            # PyJWT and cryptography (about 9 MiB of RSS) only when tokens are on.
            from .tokens import TokenKey
        self._key = (
            TokenKey(
                settings.auth_key,
                audience=settings.auth_audience,
                issuer=settings.auth_issuer,
                leeway=settings.auth_leeway,
            )
            if settings.auth_key
            else None
        )
        self._app = (
            AppCheck(
                settings.auth_url, timeout=settings.auth_url_timeout, ttl=settings.auth_cache_ttl
            )
            if settings.auth_url
            else None
        )
        if authorize is not None and self._app is not None:
            raise ValueError("give the application's check as authorize or as --auth-url, not both")
        self._authorize = authorize
        self._anonymous = Rights(settings.anonymous_subscribe)
        self._cookie = settings.auth_cookie
        self._tokens: OrderedDict[str, _Claims] = OrderedDict()
        self.enabled = self._key is not None or self._app is not None or authorize is not None
        """Whether anything is checked at all."""
        self._off = not self.enabled
        self.quota = Quota(settings, access_control=self.enabled)
        """``--publish-rate`` and ``--max-connections-per-ip``."""

    # -- lifecycle (the app's cleanup_ctx) -----------------------------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.close()

    async def start(self) -> None:
        if self._app is not None:
            await self._app.start()
        if self.enabled:
            sources = []
            if self._key is not None:
                sources.append(f"tokens ({self._key.describe})")
            if self._app is not None:
                sources.append(f"--auth-url {self._app.describe}")
            if self._authorize is not None:
                sources.append("the application's authorize()")
            if self._anonymous:
                sources.append("anonymous reading of " + ", ".join(self._anonymous.patterns))
            log.info("access control on: %s", "; ".join(sources))
        quota = self.quota
        if quota.rate or quota.streams_per_address:
            log.info(
                "limits per client: %s publishes a second, %s streams per address%s",
                f"{quota.rate:g}" if quota.rate else "unlimited",
                quota.streams_per_address or "unlimited",
                "; X-Forwarded-For believed from trusted proxies"
                if quota.address.behind_proxies
                else "",
            )

    async def close(self) -> None:
        if self._app is not None:
            await self._app.close()

    # -- the check -------------------------------------------------------------------------------

    async def check(self, request: web.Request, topic: str, action: Action) -> Grant:
        """May this request do ``action`` on ``topic``? The :class:`Grant`, or
        401/403/503 raised (see the module's docstring for the order)."""
        if self._off:
            return OPEN
        if action == "subscribe" and self._anonymous.allows(topic):
            return OPEN
        token = self._token(request) if self._key is not None else None
        grant, unverified = self._by_token(token, topic, action)
        if grant is not None:
            return grant
        if self._app is not None:
            return await self._app.ask(request, topic, action)
        if self._authorize is not None:
            return await self._ask_authorize(request, topic, action)
        raise self._refusal(unverified, topic, action)

    def _by_token(
        self, token: str | None, topic: str, action: Action
    ) -> tuple[Grant | None, str | None]:
        """The grant a token decides (403 raised if it forbids ``action``), or
        None and why an offered token did not verify."""
        if token is None:
            return None, None
        try:
            claims = self._claims(token)
        except _NotVerified as exc:
            return None, f"the token does not verify: {exc}"
        rights = claims.subscribe if action == "subscribe" else claims.publish
        if not rights.allows(topic):
            raise Forbidden(f"the token does not allow {action} on {topic!r}")
        return claims.grant, None

    def _refusal(self, unverified: str | None, topic: str, action: Action) -> Unauthorized:
        if unverified is not None:
            return _invalid(unverified)
        return Unauthorized(
            f"{action} on {topic!r} needs a token: send Authorization: Bearer <token>, "
            f"the {self._cookie} cookie, or ?token="
        )

    def credentials(self, request: web.Request) -> Credentials | None:
        """What later checks of a connection (a WebSocket's ``publish``
        commands) need of the request that opened it: the request itself when
        an application decides (``authorize``, ``--auth-url``), else only its
        token and its address; None when nothing is checked or limited."""
        if self._app is not None or self._authorize is not None:
            return Credentials(request, None, "")
        quota = self.quota
        if self._off and not quota.rate:
            return None
        token = self._token(request) if self._key is not None else None
        return Credentials(None, token, quota.address(request) if quota.rate else "")

    async def check_publish(self, cred: Credentials, topic: str) -> Grant:
        """:meth:`check` of a publish by the connection ``cred`` was taken
        from, charged to its publisher's ``--publish-rate`` (429 past it)."""
        request = cred.request
        if request is not None:
            grant = await self.check(request, topic, "publish")
            self.quota.take(request, grant)
            return grant
        grant = OPEN
        if not self._off:
            found, unverified = self._by_token(cred.token, topic, "publish")
            if found is None:
                raise self._refusal(unverified, topic, "publish")
            grant = found
        self.quota.charge(self.quota.publisher_at(cred.address, grant), 1)
        return grant

    def _token(self, request: web.BaseRequest) -> str | None:
        """The token from the first carrier present: header, cookie, query."""
        headers = request.headers
        value = headers.get("Authorization")
        if value is not None:
            scheme, _, token = value.partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
        if "Cookie" in headers:
            cookie = request.cookies.get(self._cookie)
            if cookie:
                return cookie
        if request.rel_url.raw_query_string:
            query = request.query.get("token")
            if query:
                return query
        return None

    def _claims(self, token: str) -> _Claims:
        """A verified token's claims, from the cache when it holds them."""
        cache = self._tokens
        claims = cache.get(token)
        if claims is not None:
            expires_at = claims.grant.expires_at
            if expires_at is not None and expires_at <= time.time():
                del cache[token]
                raise _invalid("the token has expired")
            cache.move_to_end(token)
            return claims
        assert self._key is not None
        try:
            claims = _claims(self._key.decode(token), self._key.leeway)
        except _TokenInvalid as exc:
            raise _invalid(str(exc)) from None
        except _BadClaim as exc:
            raise _invalid(f"the token is not valid: {exc}") from None
        if len(token) <= TOKEN_CACHE_MAX_CHARS:
            if len(cache) >= TOKEN_CACHE_SIZE:
                cache.popitem(last=False)
            cache[token] = claims
        return claims

    async def _ask_authorize(self, request: web.Request, topic: str, action: Action) -> Grant:
        assert self._authorize is not None
        try:
            allowed = self._authorize(request, topic, action)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except StreamgateError:
            raise
        except Exception:
            log.exception("authorize(%r, %r) failed", topic, action)
            raise Unavailable(
                "the access check failed; try again", code="auth_unavailable"
            ) from None
        if not allowed:
            raise Forbidden(f"not allowed: {action} on {topic!r}")
        return OPEN

    async def visible(self, request: web.Request, names: Sequence[str]) -> list[str]:
        """The names the request may subscribe to (``GET /topics``). 401 when it
        may see none for want of a credential (no anonymous topic among them)."""
        if self._off:
            return list(names)
        allowed: list[str] = []
        refused: Unauthorized | None = None
        for start in range(0, len(names), LIST_CONCURRENCY):
            chunk = names[start : start + LIST_CONCURRENCY]
            answers = await asyncio.gather(*(self._may_read(request, n) for n in chunk))
            for name, answer in zip(chunk, answers, strict=True):
                if answer is True:
                    allowed.append(name)
                elif isinstance(answer, Unauthorized):
                    refused = answer
        if not allowed:
            if refused is not None:
                raise refused
            if not names and self._token(request) is None and not self._anonymous:
                raise Unauthorized("listing topics needs a token")
        return allowed

    async def _may_read(self, request: web.Request, name: str) -> bool | Unauthorized:
        try:
            await self.check(request, name, "subscribe")
        except Unauthorized as exc:
            return exc
        except Forbidden:
            return False
        return True
