"""streamgate inside your own aiohttp app: a tiny shop that streams its orders.

Run it (from the repository, after ``pip install -e .``)::

    python docs/examples/shop.py --port 8081

then open http://127.0.0.1:8081/ and sign in. What it shows:

* the app's own routes and session (a login cookie), with the gateway
  mounted under ``/stream`` (its page at ``/stream/``, its streams at
  ``/stream/sse/orders``, ``/stream/ws/orders``, ``/stream/chunked/orders``);
* publishing from the app's handlers (``POST /orders``) and from a background
  task (``news``), with ``await gw.publish(...)``;
* a shared source (``prices``) and a per-connection stream (``squares``);
* access control by the app's own session: ``authorize`` lets a signed-in user
  read ``orders`` and ``news``, anyone read ``prices``, ``ticks`` and
  ``squares``, and only ``admin`` publish over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import Gateway

PUBLIC = {"prices", "ticks", "squares"}
SESSION_COOKIE = "shop_session"
SESSIONS = web.AppKey("sessions", dict[str, str])


def user_of(request: web.Request) -> str | None:
    """The signed-in user: the app's own session cookie. ``config_dict``, not
    ``request.app``: in the gateway's handlers (``authorize``) the request's app
    is the gateway's own, mounted in this one; ``config_dict`` sees both."""
    return request.config_dict[SESSIONS].get(request.cookies.get(SESSION_COOKIE, ""))


async def authorize(request: web.Request, topic: str, action: str) -> bool:
    """The gateway asks this for every stream and HTTP publish (the app's session)."""
    user = user_of(request)
    if action == "subscribe":
        return topic in PUBLIC or user is not None
    return user == "admin"  # publish and delete over HTTP


gw = Gateway(history_size=500, heartbeat=10, tick_interval=0, authorize=authorize)


@gw.stream("squares")
async def squares(n: int = 10, every: float = 0.0) -> AsyncIterator[dict[str, int]]:
    """Per connection: /stream/sse/squares?n=5 (n is converted; n=x is 400)."""
    for i in range(1, n + 1):
        yield {"i": i, "sq": i * i}
        if every:
            await asyncio.sleep(every)


@gw.source("prices")
async def prices() -> AsyncIterator[dict[str, float]]:
    """Shared: runs once while the app runs; every subscriber sees the same prices."""
    price = 100.0
    while True:
        price = round(price + random.uniform(-1, 1), 2)
        yield {"price": price}
        await asyncio.sleep(1)


async def home(request: web.Request) -> web.Response:
    user = user_of(request)
    return web.Response(
        content_type="text/html",
        text=(
            '<link rel="icon" href="data:,"><h1>shop</h1>'
            f"<p>{'signed in as ' + user if user else 'not signed in'}</p>"
            '<form method="post" action="/login"><input name="user" value="admin">'
            "<button>sign in</button></form>"
            '<p><a href="/stream/?topic=orders">watch the orders</a></p>'
        ),
    )


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    user = str(form.get("user") or "").strip()
    if not user:
        raise web.HTTPBadRequest(text='{"error":"no user"}', content_type="application/json")
    sid = secrets.token_urlsafe(16)
    request.app[SESSIONS][sid] = user
    resp = web.HTTPSeeOther("/")
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Lax")
    raise resp


async def create_order(request: web.Request) -> web.Response:
    """An ordinary handler of the app that publishes: the order goes to every
    subscriber of ``orders`` on every transport, with an id to resume from."""
    user = user_of(request)
    if user is None:
        return web.json_response({"error": "sign in first"}, status=401)
    order = await request.json()
    msg_id = await gw.publish("orders", {"by": user, **order})
    return web.json_response({"id": msg_id}, status=201)


async def news_ticker(app: web.Application) -> AsyncIterator[None]:
    """A background task of the app's own, publishing with the same call."""

    async def run() -> None:
        n = 0
        while True:
            n += 1
            await gw.publish("news", {"n": n, "headline": f"item {n}"})
            await asyncio.sleep(0.5)

    task = asyncio.create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def make_app() -> web.Application:
    app = web.Application()
    app[SESSIONS] = {}
    app.router.add_get("/", home)
    app.router.add_post("/login", login)
    app.router.add_post("/orders", create_order)
    gw.attach(app, prefix="/stream")  # the gateway's routes, start and stop
    app.cleanup_ctx.append(news_ticker)  # after the gateway's: it starts first
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    # handler_cancellation: a stream whose client left ends at once.
    web.run_app(make_app(), host=args.host, port=args.port, handler_cancellation=True)


if __name__ == "__main__":
    main()
