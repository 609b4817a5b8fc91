"""Per-client limits: who a client is, how fast it may publish, how many streams
it may hold.

* :class:`ClientAddress`: the client's address, the peer's unless the peer is a
  trusted proxy (``--trusted-proxies``), in which case ``X-Forwarded-For`` is
  read from the right and the first hop that is not a trusted proxy is the
  client (every hop left of it could have been written by the client itself).
* :class:`Quota`: ``--publish-rate``, a token bucket per publisher (the token's
  subject, or the client's address without one) that a batch draws from once
  per item, and ``--max-connections-per-ip``, a count of open streams per
  address (an IPv6 client per /64, which one host commonly holds). Both answer
  429 past the limit, with ``Retry-After``.

Both are off by default unless access control is on (a key, an ``--auth-url``
or an embedding application's ``authorize``): then 100 publishes a second and
256 streams per address, unless set. Nothing here grows without bound: an
address's count goes when its last stream does, and a bucket goes once it has
filled up again (at most ``burst / rate`` seconds after its last publish, or
longer for one that a batch put in debt), with a hard cap on top.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from .errors import TooManyRequests

if TYPE_CHECKING:
    from .auth import Grant
    from .settings import Settings

__all__ = [
    "DEFAULT_PUBLISH_RATE",
    "DEFAULT_STREAMS_PER_ADDRESS",
    "ClientAddress",
    "Quota",
    "address_key",
]

DEFAULT_PUBLISH_RATE = 100.0
"""``--publish-rate`` when unset and access control is on."""
DEFAULT_STREAMS_PER_ADDRESS = 256
"""``--max-connections-per-ip`` when unset and access control is on."""
MAX_BUCKETS = 100_000
"""Most publishers tracked at once; past it the least recently seen is forgotten
(it starts again with a full bucket)."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_key(address: str) -> str:
    """What one client's limits are counted under: the address, an IPv4-mapped
    IPv6 address as IPv4, any other IPv6 address as its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


class ClientAddress:
    """The client's address for a request, behind ``--trusted-proxies``."""

    __slots__ = ("_trusted",)

    def __init__(self, trusted: Sequence[str]) -> None:
        self._trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(t, strict=False) for t in trusted
        )

    @property
    def behind_proxies(self) -> bool:
        """Whether any proxy is trusted (``X-Forwarded-For`` may be read)."""
        return bool(self._trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)

    def __call__(self, request: web.BaseRequest) -> str:
        peer = request.remote or ""
        if not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [
            hop.strip().strip("[]")
            for header in request.headers.getall("X-Forwarded-For", ())
            for hop in header.split(",")
        ]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer  # every hop a proxy: the farthest one


class Quota:
    """``--publish-rate`` and ``--max-connections-per-ip``; off: one attribute test."""

    __slots__ = ("_buckets", "_streams", "address", "burst", "rate", "streams_per_address")

    def __init__(self, settings: Settings, *, access_control: bool) -> None:
        rate = settings.publish_rate
        if rate is None:
            rate = DEFAULT_PUBLISH_RATE if access_control else 0.0
        per_address = settings.max_connections_per_ip
        if per_address is None:
            per_address = DEFAULT_STREAMS_PER_ADDRESS if access_control else 0
        self.rate = float(rate)
        self.burst = max(1.0, self.rate)
        self.streams_per_address = per_address
        self.address = ClientAddress(settings.trusted_proxies)
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        """Publisher -> [tokens, when they were counted], least recently used first."""
        self._streams: dict[str, int] = {}
        """Address -> open streams (no entry at 0)."""

    # -- publishing ----------------------------------------------------------------------------

    def publisher(self, request: web.BaseRequest, grant: Grant) -> str | None:
        """Whom a publish counts against (``None``: no rate limit); 429 when its
        bucket is empty. Charge what it publishes with :meth:`charge`."""
        if not self.rate:
            return None
        return self.publisher_at(self.address(request), grant)

    def publisher_at(self, address: str, grant: Grant) -> str | None:
        """:meth:`publisher` for a client whose address is known already."""
        if not self.rate:
            return None
        key = grant.subject
        key = "sub:" + key if key is not None else "ip:" + address_key(address)
        bucket = self._bucket(key, time.monotonic())
        if bucket[0] < 1.0:
            wait = math.ceil((1.0 - bucket[0]) / self.rate)
            raise TooManyRequests(
                f"over {self.rate:g} publishes a second (--publish-rate) for this "
                f"{'token' if grant.subject is not None else 'address'}; "
                f"retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        return key

    def charge(self, publisher: str | None, items: int) -> None:
        """Take ``items`` from the publisher's bucket; a batch may leave it in
        debt, which the publisher then waits out."""
        if publisher is not None:
            self._bucket(publisher, time.monotonic())[0] -= items

    def take(self, request: web.BaseRequest, grant: Grant) -> None:
        """One publish (a WebSocket command): check and charge at once."""
        self.charge(self.publisher(request, grant), 1)

    def _bucket(self, key: str, now: float) -> list[float]:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._forget_full(now)
            bucket = buckets[key] = [self.burst, now]
        else:
            buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        return bucket

    def _forget_full(self, now: float) -> None:
        """Drop the least recently used buckets that are full again (a new one
        would be the same), and any past :data:`MAX_BUCKETS`."""
        buckets = self._buckets
        rate, burst = self.rate, self.burst
        while buckets:
            key, (tokens, stamp) = next(iter(buckets.items()))
            if tokens + (now - stamp) * rate < burst and len(buckets) < MAX_BUCKETS:
                break
            del buckets[key]

    @property
    def publishers(self) -> int:
        """Buckets held (tests)."""
        return len(self._buckets)

    # -- streams -------------------------------------------------------------------------------

    def enter(self, request: web.BaseRequest) -> str | None:
        """Count a new stream against its address; 429 past the limit. Returns
        the key every stream that entered must :meth:`leave` with, once (None
        when there is no limit)."""
        limit = self.streams_per_address
        if not limit:
            return None
        key = address_key(self.address(request))
        count = self._streams.get(key, 0)
        if count >= limit:
            raise TooManyRequests(
                f"{limit} streams are open from this address already (--max-connections-per-ip)",
                code="too_many_streams",
                headers={"Retry-After": "1"},
            )
        self._streams[key] = count + 1
        return key

    def leave(self, key: str | None) -> None:
        if key is None:
            return
        count = self._streams.get(key, 0) - 1
        if count > 0:
            self._streams[key] = count
        else:
            self._streams.pop(key, None)

    def open_streams(self, request: web.BaseRequest) -> int:
        """Streams counted for the request's address (tests)."""
        return self._streams.get(address_key(self.address(request)), 0)
