"""The admin HTTP listener (aiohttp, on the server's own event loop): /metrics for Prometheus without a
password; the dashboard, its login and the JSON API behind the admin password.

Who may do what: a login form sets a session cookie (HttpOnly, SameSite=Strict); scripts may send the
password with HTTP Basic instead. Every POST must come from our own origin (an Origin header, when sent,
names this host); a cookie session must echo its CSRF token in X-CSRF-Token, and a Basic-authenticated POST
must be JSON (no HTML form can send that cross-site). Password checks run off the loop; failures are limited
per client IP. It does not know how passwords are hashed: app.py passes ``verify``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from postroom.admin.activity import Activity
from postroom.admin.api import Api, QueueView
from postroom.admin.sessions import LoginSession, LoginSessions, LoginThrottle
from postroom.config.schema import AdminSettings
from postroom.observe.log import Logger
from postroom.observe.metrics import CONTENT_TYPE, Metrics, QueueStats

__all__ = ["AdminServer", "Verifier"]

COOKIE = "postroom_admin"
_STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_PUBLIC = ("/metrics", "/login", "/favicon.ico")

# The password as typed -> True (right), False (wrong), None (no admin password is configured).
Verifier = Callable[[str], bool | None]


@dataclass(frozen=True, slots=True)
class _Auth:
    session: LoginSession | None  # None: HTTP Basic


def _page(name: str) -> str:
    return resources.files("postroom.admin.dashboard").joinpath(name).read_text(encoding="utf-8")


class AdminServer:
    """Serves the admin HTTP endpoints on ``settings.listen``; ``bound`` holds the real addresses."""

    def __init__(
        self,
        *,
        settings: AdminSettings,
        metrics: Metrics,
        activity: Activity,
        queue: QueueView,
        verify: Verifier,
        log: Logger,
        clock: Callable[[], float],
        checks: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
        sample_interval: float = 5.0,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._activity = activity
        self._queue = queue
        self._verify = verify
        self._log = log
        self._sessions = LoginSessions(lifetime=settings.session_lifetime, clock=clock)
        self._throttle = LoginThrottle(clock=clock)
        self._sample_interval = sample_interval
        self._api = Api(queue=queue, activity=activity, checks=checks)
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.bound: list[tuple[str, int]] = []

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard])
        app.add_routes(
            [
                web.get("/metrics", self._metrics_page),
                web.get("/login", self._login_page),
                web.post("/login", self._login),
                web.post("/logout", self._logout),
                web.get("/", self._dashboard),
                web.get("/static/{name}", self._static),
                web.get("/favicon.ico", _no_content),
                *self._api.routes(),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        for address in self._settings.listen:
            site = web.TCPSite(self._runner, address.host, address.port, reuse_address=True)
            await site.start()
        self.bound = [(str(address[0]), int(address[1])) for address in self._runner.addresses]
        self._metrics.watch_queue(self._queue_stats)
        self._sampler = asyncio.create_task(self._sample_forever())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._metrics.watch_queue(lambda: None)
        await asyncio.to_thread(self._queue.close)
        self.bound = []

    async def _sample_forever(self) -> None:
        while True:
            try:
                count, _ = await self._queue.run_plain(self._queue.summary)
            except Exception as exc:  # the database failed us: log it, keep sampling
                self._log.failure("admin.sample_error", exc)
            else:
                self._activity.sample(count)
            await asyncio.sleep(self._sample_interval)

    def _queue_stats(self) -> QueueStats:
        count, oldest_age = self._queue.summary()  # called by render() on the queue's thread
        return QueueStats(messages=count, oldest_age=oldest_age)

    # --- access control ---------------------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "POST" and not _same_origin(request):
            raise web.HTTPForbidden(text="cross-origin request refused")
        if request.path in _PUBLIC or request.path.startswith("/static/"):
            return await handler(request)
        auth = await self._authenticate(request)
        if auth is None:
            if request.path.startswith("/api/"):
                headers = {} if COOKIE in request.cookies else {"WWW-Authenticate": 'Basic realm="postroom"'}
                raise web.HTTPUnauthorized(
                    text='{"error": "log in first"}', content_type="application/json", headers=headers
                )
            raise web.HTTPFound("/login")
        if request.method == "POST" and not _csrf_ok(request, auth):
            raise web.HTTPForbidden(text="missing or wrong CSRF token")
        return await handler(request)

    async def _authenticate(self, request: web.Request) -> _Auth | None:
        session = self._sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            return _Auth(session)
        password = _basic_password(request.headers.get("Authorization", ""))
        if password is not None and await self._check(request, password):
            return _Auth(None)
        return None

    async def _check(self, request: web.Request, password: str) -> bool:
        client = request.remote or "unknown"
        if not self._throttle.allowed(client):
            raise web.HTTPTooManyRequests(text="too many failed logins; try again in a few minutes")
        verdict = await asyncio.to_thread(self._verify, password)
        if verdict:
            self._throttle.succeeded(client)
            return True
        self._throttle.failed(client)
        self._log.info("admin.login_failed", client=client, configured=verdict is not None)
        return False

    # --- pages ------------------------------------------------------------------------------------------

    async def _metrics_page(self, request: web.Request) -> web.Response:
        body = await self._queue.run_plain(self._metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _login_page(
        self, request: web.Request, *, problem: str = "", status: int = 200
    ) -> web.Response:
        if not problem and await asyncio.to_thread(self._verify, "") is None:
            problem = "No admin password is set yet: run `postroom admin passwd` on the server."
        text = _page("login.html").replace("{{problem}}", html.escape(problem))
        return web.Response(text=text, content_type="text/html", status=status, headers=_NO_STORE)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        password = form.get("password")
        if not isinstance(password, str) or not password:
            return await self._login_page(request, problem="Enter the admin password.", status=400)
        if not await self._check(request, password):
            return await self._login_page(request, problem="Wrong password.", status=401)
        session = self._sessions.create()
        self._log.info("admin.login", client=request.remote or "unknown")
        response = web.HTTPFound("/")
        response.set_cookie(
            COOKIE,
            session.token,
            max_age=int(self._settings.session_lifetime),
            httponly=True,
            samesite="Strict",
            path="/",
        )
        raise response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        self._sessions.drop(request.cookies.get(COOKIE))
        response = web.HTTPFound("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def _dashboard(self, request: web.Request) -> web.Response:
        session = self._sessions.get(request.cookies.get(COOKIE))  # None: HTTP Basic, no CSRF token needed
        csrf = session.csrf if session is not None else ""
        text = _page("index.html").replace("{{csrf}}", html.escape(csrf))
        return web.Response(text=text, content_type="text/html", headers=_NO_STORE)

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(text=_page(name), content_type=_STATIC[name])


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


_NO_STORE = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",  # no framing: clickjacking on the buttons
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
}


def _basic_password(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None


def _same_origin(request: web.Request) -> bool:
    """RFC 6454: browsers name the page's origin on POSTs; it must be this listener (host:port)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser (curl, scripts); cookies are SameSite=Strict anyway
    _, _, rest = origin.partition("://")
    return rest == request.host


def _csrf_ok(request: web.Request, auth: _Auth) -> bool:
    if auth.session is not None:
        return auth.session.csrf_matches(request.headers.get("X-CSRF-Token", ""))
    return request.content_type == "application/json"
