"""What an access check costs: ``python -m bench.authcost``.

In-process timing of ``Auth.check`` (gateway/auth.py) on real aiohttp request
objects: one request is captured from a real HTTP exchange on loopback, and
clones of it (``request.clone(headers=...)``) carry the tokens. Per check, in
microseconds, best of 7 repeats:

* access control off (the one attribute test every stream and publish pays);
* HS256 and RS256 (2048-bit) tokens in the ``Authorization`` header:
  uncached (a distinct token each time: parse, verify the signature, check the
  claims) and cached (the same token again: what a reconnect or each WebSocket
  ``publish`` command pays);
* the same token in a cookie and in ``?token=`` (cached), for the carriers.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth import Auth
from gateway.settings import Settings

SECRET = "a benchmark secret that is well over thirty-two bytes"
CLAIMS = {"sub": "user-42", "streamgate": {"subscribe": ["news", "user.42.*"], "publish": []}}
UNCACHED = 1000
CACHED = 20_000


async def capture() -> web.BaseRequest:
    """A request object as aiohttp made it for a real HTTP exchange."""
    captured: list[web.BaseRequest] = []

    async def handler(request: web.Request) -> web.Response:
        captured.append(request)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/sse/{topic}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/sse/news?since=0-0",
                headers={"Accept": "text/event-stream", "Cookie": "theme=dark"},
            ) as resp,
        ):
            await resp.read()
    finally:
        await runner.cleanup()
    return captured[0]


async def per_check(auth: Auth, requests: list[Any], repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for request in requests:
            await auth.check(request, "news", "subscribe")
        best = min(best, (time.perf_counter() - started) / len(requests))
    return best * 1e6


async def measure(
    auth: Auth, mint: Callable[[int], str], base: web.BaseRequest
) -> dict[str, float]:
    def with_header(token: str) -> Any:
        return base.clone(headers={"Authorization": f"Bearer {token}"})

    tokens = [mint(i) for i in range(UNCACHED)]
    distinct = [with_header(t) for t in tokens]
    auth._tokens.clear()

    async def uncached() -> float:
        best = float("inf")
        for _ in range(7):
            auth._tokens.clear()
            best = min(best, await per_check(auth, distinct, repeat=1))
        return best

    same = [with_header(tokens[0])] * CACHED
    cookie = [base.clone(headers={"Cookie": f"theme=dark; streamgate_token={tokens[0]}"})] * CACHED
    query = [base.clone(rel_url=f"/sse/news?since=0-0&token={tokens[0]}")] * CACHED
    return {
        "uncached (header)": await uncached(),
        "cached (header)": await per_check(auth, same),
        "cached (cookie)": await per_check(auth, cookie),
        "cached (query)": await per_check(auth, query),
    }


async def main() -> None:
    base = await capture()
    off = Auth(Settings())
    print(f"access control off: {await per_check(off, [base] * CACHED):.3f} us per check")

    hs = Auth(Settings(auth_key=SECRET))
    results = {
        "HS256": await measure(
            hs, lambda i: jwt.encode({**CLAIMS, "jti": str(i)}, SECRET, algorithm="HS256"), base
        )
    }
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "public.pem"
        path.write_bytes(pem)
        rs = Auth(Settings(auth_key=str(path)))
    results["RS256"] = await measure(
        rs, lambda i: jwt.encode({**CLAIMS, "jti": str(i)}, private, algorithm="RS256"), base
    )
    for alg, figures in results.items():
        for what, us in figures.items():
            print(f"{alg:6} {what:18} {us:8.2f} us per check")


if __name__ == "__main__":
    asyncio.run(main())
