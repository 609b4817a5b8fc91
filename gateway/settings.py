"""Settings: one frozen dataclass, filled from CLI flags and STREAMGATE_* variables.

Precedence: a CLI flag beats the environment variable, which beats the default.
Every field documents itself; ``streamgate serve --help`` is generated from
these fields, so the help and the code cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENV_PREFIX",
    "HISTORY_ENTRY_SLACK",
    "Settings",
    "add_arguments",
    "from_args",
    "from_env",
]

ENV_PREFIX = "STREAMGATE_"

HISTORY_ENTRY_SLACK = 1024
"""What a retained message may cost beyond its data, in bytes: its envelope
(id, topic, ts: at most about 230 bytes) and the memory broker's per-message
overhead (``MESSAGE_OVERHEAD``, 384). ``max_history_bytes`` must hold 16 such
messages of ``max_message_bytes``: the largest batch body, so a batch of
full-size messages is never evicted by the publish that brings it."""


def _opt(default: Any, help: str, *, group: str, flag: str | None = None, repr: bool = True) -> Any:
    return field(default=default, repr=repr, metadata={"help": help, "group": group, "flag": flag})


COOKIE_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""A cookie name is an RFC 9110 token (RFC 6265 section 4.1.1)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """Every knob of the gateway, grouped by purpose."""

    # -- network
    host: str = _opt("0.0.0.0", "address to listen on", group="network")
    port: int = _opt(8080, "TCP port to listen on (0 picks a free one)", group="network")

    # -- sources
    tick_interval: float = _opt(
        1.0, "seconds between messages of the demo topic 'ticks' (0 disables it)", group="sources"
    )
    sources: tuple[str, ...] = _opt(
        (),
        "shared source NAME=module:function, an async generator run once that publishes "
        "into topic NAME (repeatable; env: comma-separated)",
        group="sources",
        flag="--source",
    )
    streams: tuple[str, ...] = _opt(
        (),
        "per-connection stream NAME=module:function, an async generator run once per "
        "request with the query parameters (repeatable; env: comma-separated)",
        group="sources",
        flag="--stream",
    )
    topics: tuple[str, ...] = _opt(
        (),
        "topic to create at start-up so clients can subscribe before the first publish "
        "(repeatable; env: comma-separated)",
        group="sources",
        flag="--topic",
    )

    # -- broker
    broker: str = _opt(
        "memory",
        "where ids and history live: 'memory' (embedded, one process) or a Redis URL "
        "(redis://host:6379/0) shared by several replicas",
        group="broker",
    )
    redis_prefix: str = _opt(
        "streamgate:", "prefix of every Redis key the gateway uses", group="broker"
    )
    source_lease: float = _opt(
        3.0,
        "seconds a gateway's claim on a shared source (ticks, --source) lasts unrenewed: with "
        "Redis one replica runs each, and another takes over within this time after it dies",
        group="broker",
    )
    redis_timeout: float = _opt(
        2.0,
        "seconds to connect to Redis and to get an answer to one command; past it the "
        "request is 503 broker_unavailable",
        group="broker",
    )

    # -- history and limits
    history_size: int = _opt(1000, "messages of history kept per topic for resume", group="limits")
    max_topics: int = _opt(1000, "most topics the gateway holds", group="limits")
    max_message_bytes: int = _opt(
        65536, "largest publish body or WebSocket command, in bytes", group="limits"
    )
    max_connections: int = _opt(
        0,
        "most client connections held at once; past it a connection gets 503 JSON and is "
        "closed (0: the open-files limit less 64)",
        group="limits",
    )
    read_timeout: float = _opt(
        10.0,
        "seconds a client has to send a request's headers (from connecting, or from the end "
        "of its previous response on a kept-alive connection) and, separately, its body",
        group="limits",
    )
    ws_publish_rate: float = _opt(
        1000.0,
        "publishes a second one WebSocket client may send (and as a burst); past it an "
        "error frame, and close 1008 if it keeps up at twice the rate (0: no limit)",
        group="limits",
    )
    max_skip: int = _opt(
        100_000,
        "most items the gateway skips itself to resume a per-connection stream (since=0-<n>); "
        "past it the request is refused (400). Streams that take a skip parameter position "
        "themselves and have no such cap",
        group="limits",
    )
    max_history_bytes: int = _opt(
        256 << 20,
        "bytes of history the memory broker keeps over all topics (each message's JSON "
        "plus a fixed per-message overhead); past it the oldest messages of any topic go "
        f"first; at least 16 x (max-message-bytes + {HISTORY_ENTRY_SLACK})",
        group="limits",
    )
    topic_ttl: float = _opt(
        3600.0,
        "seconds a topic with no local subscriber and no publish is kept before it is "
        "removed with its history (0: never); topics declared at start never expire",
        group="limits",
    )

    # -- access control (README "Security", PROTOCOL "Access control")
    auth_key: str = _opt(
        "",
        "turns tokens on: an HS256 secret (32 bytes or more), or the path of a file holding "
        "a PEM public key (RSA: RS256; EC: ES256/384/512; Ed25519: EdDSA), a JWKS JSON "
        "document, or the HS256 secret. Every stream and publish then needs a token that "
        "allows it (prefer the environment variable or a file over the flag: a flag shows "
        "in ps)",
        group="access control",
        repr=False,
    )
    auth_audience: str = _opt(
        "",
        "the aud claim a token must carry (none: tokens with aud are refused)",
        group="access control",
    )
    auth_issuer: str = _opt(
        "", "the iss claim a token must carry (none: not checked)", group="access control"
    )
    auth_leeway: float = _opt(
        5.0,
        "seconds of clock skew allowed on a token's exp and nbf; a stream ends this long "
        "after its token's exp",
        group="access control",
    )
    auth_cookie: str = _opt(
        "streamgate_token",
        "the cookie that may carry the token (after Authorization: Bearer, before ?token=)",
        group="access control",
    )
    anonymous_subscribe: tuple[str, ...] = _opt(
        (),
        "topic glob (fnmatch: news, public.*, *) anyone may read without a credential "
        "while access control is on (repeatable; env: comma-separated)",
        group="access control",
        flag="--anonymous-subscribe",
    )
    auth_url: str = _opt(
        "",
        "turns the application's say on: before each new stream or publish, POST "
        '{"topic","action"} there with the client\'s Cookie and Authorization; '
        "2xx allows, 401/403 refuse, anything else is 503",
        group="access control",
    )
    auth_url_timeout: float = _opt(
        2.0, "seconds the --auth-url answer may take; past it 503", group="access control"
    )
    auth_cache_ttl: float = _opt(
        5.0,
        "seconds an --auth-url answer is reused for the same credential, topic and action "
        "(0: ask every time)",
        group="access control",
    )
    publish_rate: float | None = _opt(
        None,
        "publishes a second per token subject (per client address without one), and as a "
        "burst; a batch counts its items; past it 429 (0: no limit; unset: 100 with access "
        "control on, else no limit)",
        group="access control",
    )
    max_connections_per_ip: int | None = _opt(
        None,
        "open streams per client address (IPv6: per /64); past it 429 (0: no limit; "
        "unset: 256 with access control on, else no limit)",
        group="access control",
    )
    trusted_proxies: tuple[str, ...] = _opt(
        (),
        "address or CIDR of a proxy whose X-Forwarded-For is believed for the client "
        "address (repeatable; env: comma-separated; none: the peer address is the client)",
        group="access control",
        flag="--trusted-proxies",
    )

    # -- delivery
    heartbeat: float = _opt(
        15.0, "seconds between heartbeats on idle streams (all transports)", group="delivery"
    )
    max_queue_bytes: int = _opt(
        1 << 20,
        "bytes a subscriber may have queued before it is disconnected as a slow consumer",
        group="delivery",
    )
    write_timeout: float = _opt(
        10.0,
        "seconds a subscriber's socket may stay blocked before it is disconnected",
        group="delivery",
    )
    write_delay: float = _opt(
        0.0,
        "seconds to coalesce published messages before a sweep writes them (0: a sweep "
        "starts at once)",
        group="delivery",
    )
    flush_hold: float = _opt(
        0.005,
        "most seconds a topic's next sweep is held when publishing outpaces the sweeps "
        "(4 messages or more arrived during the last one, or it began with more than 256): "
        "it waits as long as the last sweep kept the loop busy, up to this, and carries "
        "every message that arrives meanwhile; a quiet topic is never held (0: never; "
        "ignored with --write-delay)",
        group="delivery",
    )
    retry_ms: int = _opt(
        1000, "reconnection delay hint for clients, in milliseconds (SSE retry:)", group="delivery"
    )

    # -- browsers: origins and CORS
    allowed_origins: tuple[str, ...] = _opt(
        (),
        "origin of a web app whose pages may use the gateway (scheme://host[:port], as a "
        "browser sends it: https://app.example): its WebSocket handshakes are accepted and "
        "the JSON API and the streams answer it with CORS headers; '*' for any origin, only "
        "with --cors-credentials false (repeatable; env: comma-separated)",
        group="browsers",
    )
    cors_credentials: bool = _opt(
        True,
        "let the listed origins' pages send credentials (cookies, HTTP authentication: "
        "EventSource withCredentials, fetch credentials 'include'), with "
        "Access-Control-Allow-Credentials: true; false refuses them (and allows '*')",
        group="browsers",
    )

    # -- metrics and logs (README "Metrics and logs")
    metrics: bool = _opt(
        True,
        "serve Prometheus metrics at /metrics (text exposition format); false: 404 there",
        group="metrics and logs",
    )
    metrics_token: str = _opt(
        "",
        "a secret /metrics then asks for as Authorization: Bearer <token>. With access "
        "control on (--auth-key, --auth-url) /metrics is refused (403) until one is set",
        group="metrics and logs",
        repr=False,
    )
    access_log: bool = _opt(
        False,
        "log one line per request, and one per stream when it ends (transport, topic, "
        "duration, bytes, end reason)",
        group="metrics and logs",
    )
    log_format: str = _opt(
        "text",
        "'text', or 'json': one JSON object per line, for log collectors",
        group="metrics and logs",
    )

    # -- lifecycle
    grace: float = _opt(
        5.0, "shutdown grace period in seconds: streams get a goodbye, then exit", group="lifecycle"
    )
    log_level: str = _opt("info", "logging level (debug, info, warning, error)", group="lifecycle")
    loop: str = _opt(
        "auto",
        "event loop: 'uvloop', 'asyncio', or 'auto' (uvloop when it is installed)",
        group="lifecycle",
    )
    workers: int = _opt(
        1,
        "processes serving the same port (SO_REUSEPORT), one core each; more than 1 needs "
        "a shared broker (--broker redis://...) and a fixed --port",
        group="lifecycle",
    )

    def __post_init__(self) -> None:
        positive = (
            "heartbeat",
            "history_size",
            "max_topics",
            "max_message_bytes",
            "max_history_bytes",
            "max_queue_bytes",
            "write_timeout",
            "grace",
            "read_timeout",
            "redis_timeout",
            "source_lease",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in (
            "tick_interval",
            "write_delay",
            "flush_hold",
            "retry_ms",
            "max_connections",
            "ws_publish_rate",
            "max_skip",
            "topic_ttl",
            "auth_leeway",
            "auth_cache_ttl",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        least = 16 * (self.max_message_bytes + HISTORY_ENTRY_SLACK)
        if self.max_history_bytes < least:
            raise ValueError(
                f"max_history_bytes must be at least 16 x (max_message_bytes + "
                f"{HISTORY_ENTRY_SLACK}) = {least} (a batch of full-size messages), "
                f"got {self.max_history_bytes}"
            )
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.workers > 1 and self.broker == "memory":
            raise ValueError(
                "workers > 1 needs a shared broker (--broker redis://...): with the memory "
                "broker each worker would hold topics and ids of its own, and a client would "
                "see a different history on each"
            )
        if self.workers > 1 and self.port == 0:
            raise ValueError("workers > 1 needs a fixed port (every worker listens on it)")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be 'text' or 'json', got {self.log_format!r}")
        if self.metrics_token != self.metrics_token.strip() or " " in self.metrics_token:
            raise ValueError("metrics_token: no spaces (it is sent as Authorization: Bearer)")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(f"loop must be 'auto', 'asyncio' or 'uvloop', got {self.loop!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.broker != "memory" and not self.broker.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError(f"broker must be 'memory' or a redis:// URL, got {self.broker!r}")
        for spec in (*self.sources, *self.streams):
            name, sep, target = spec.partition("=")
            if not sep or not name or ":" not in target:
                raise ValueError(f"expected NAME=module:function, got {spec!r}")
        for origin in self.allowed_origins:
            _check_origin(origin)
        if "*" in self.allowed_origins and self.cors_credentials:
            raise ValueError(
                "allowed_origins '*' needs cors_credentials off (browsers refuse credentials "
                "from a wildcard): list the origins, or set --cors-credentials false"
            )

        self._check_access_control()

    def _check_access_control(self) -> None:
        for name in ("publish_rate", "max_connections_per_ip"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value!r}")
        if self.auth_url_timeout <= 0:
            raise ValueError(f"auth_url_timeout must be positive, got {self.auth_url_timeout!r}")
        if self.auth_url and not self.auth_url.startswith(("http://", "https://")):
            raise ValueError("auth_url must be an http:// or https:// URL")
        if COOKIE_NAME_RE.fullmatch(self.auth_cookie) is None:
            raise ValueError(f"auth_cookie is not a cookie name: {self.auth_cookie!r}")
        for pattern in self.anonymous_subscribe:
            if not pattern:
                raise ValueError("anonymous_subscribe: an empty pattern")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {proxy!r} is not an address or CIDR") from None


_ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.-]*://(?:\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::[0-9]{1,5})?")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _check_origin(origin: str) -> None:
    """An origin as browsers write it in ``Origin:``: lower case, no path, no
    default port; anything else would never match, so it is refused here."""
    if origin == "*":
        return
    if origin == "null":
        raise ValueError(
            "allowed_origins: never list 'null': every sandboxed frame and file: page sends it"
        )
    default = _DEFAULT_PORTS.get(origin.partition("://")[0])
    if _ORIGIN_RE.fullmatch(origin) and not (default and origin.endswith(default)):
        return
    guess = origin.strip().lower().rstrip("/")
    default = _DEFAULT_PORTS.get(guess.partition("://")[0])
    if default and guess.endswith(default):
        guess = guess[: -len(default)]
    hint = f" (did you mean {guess!r}?)" if _ORIGIN_RE.fullmatch(guess) else ""
    raise ValueError(
        f"allowed_origins: {origin!r} is not an origin as a browser sends it: "
        f"scheme://host[:port] in lower case, no path, no default port{hint}"
    )


def _fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(Settings))


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _kind(f: dataclasses.Field[Any]) -> str:
    """The field's type name, without an ``| None`` (unset: the default decides)."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return kind.removesuffix(" | None")


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = _kind(f)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if kind == "bool":
            return _bool(raw)
    except ValueError:
        raise ValueError(f"{_env_name(f.name)}: cannot read {raw!r} as {kind}") from None
    return raw


_BOOLS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLS.update({"0": False, "false": False, "no": False, "off": False})


def _bool(raw: str) -> bool:
    value = _BOOLS.get(raw.strip().lower())
    if value is None:
        raise ValueError(f"expected true or false, got {raw!r}")
    return value


def from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from STREAMGATE_* variables, then keyword overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in _fields():
        raw = env.get(_env_name(f.name))
        if raw is not None and raw != "":
            values[f.name] = _convert(f, raw)
    values.update(overrides)
    return Settings(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field, grouped as the dataclass groups them."""
    groups: dict[str, Any] = {}
    for f in _fields():
        group_name = f.metadata["group"]
        group = groups.get(group_name)
        if group is None:
            group = groups[group_name] = parser.add_argument_group(group_name)
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        env = _env_name(f.name)
        default = "unset" if f.default is None else repr(f.default)
        help_text = f"{f.metadata['help']} [env {env}; default {default}]"
        kind = _kind(f)
        if kind.startswith("tuple"):
            metavar = _METAVARS.get(f.name)
            group.add_argument(flag, dest=f.name, action="append", metavar=metavar, help=help_text)
        elif kind == "bool":  # --flag alone is true; --flag false
            group.add_argument(
                flag,
                dest=f.name,
                type=_bool_arg,
                nargs="?",
                const=True,
                default=None,
                metavar="BOOL",
                help=help_text,
            )
        else:
            conv = {"int": int, "float": float}.get(kind, str)
            group.add_argument(flag, dest=f.name, type=conv, default=None, help=help_text)


_METAVARS = {"sources": "SPEC", "streams": "SPEC", "topics": "SPEC", "allowed_origins": "ORIGIN"}


def _bool_arg(raw: str) -> bool:
    try:
        return _bool(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def from_args(
    args: argparse.Namespace | Sequence[str], environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from parsed flags (or an argv list), over the environment."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(list(args))
    overrides: dict[str, Any] = {}
    for f in _fields():
        value = getattr(args, f.name, None)
        if value is not None:
            overrides[f.name] = tuple(value) if isinstance(value, list) else value
    return from_env(environ, **overrides)
