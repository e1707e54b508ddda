"""The console's app, mounted on the manager's API app at ``/`` (``mount``).

Rules:
- It is an app of its own (its exception handlers answer pages, not JSON) under the
  manager's: the event log and body limit around the whole manager apply to it too. It
  takes every path but the API's (``/api/``, ``/health``, ``/metrics``, the API docs), so
  an unknown API path still gets the API's JSON 404 and a wrong method its 405. The peer
  API's listener (the same app, for paired managers) does not serve it.
- Every answer carries the security headers (``SECURITY_HEADERS``; a route may set its
  own policy and framing instead, ``OWN_POLICY_HEADERS``: only a report's page, which is
  stricter still and may be framed by the console): a Content-Security-
  Policy allowing only this origin's own files (no inline script or style, no framing),
  ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` (``no-referrer`` would make
  the browser send ``Origin: null`` with forms), ``nosniff``; pages are ``no-store``
  (they show protected state), the static files may be cached.
- Errors are pages: a ``SeawallError`` with its status and message, a request no route
  takes a 404 page, anything else a 500 page that says where the details are (the
  manager's log), never a traceback. A request without a valid session is sent to the
  login page (a 303, or ``HX-Redirect`` for htmx's requests, which swap fragments).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seawall.errors import SeawallError
from seawall.manager.console import files_views, views
from seawall.manager.console.admin_pages import router as admin_router
from seawall.manager.console.files_pages import router as files_router
from seawall.manager.console.policy import cookie_name
from seawall.manager.console.records_pages import router as records_router
from seawall.manager.console.recovery_pages import StartingTests
from seawall.manager.console.recovery_pages import router as recovery_router
from seawall.manager.console.routes import SignInNeeded, router
from seawall.manager.console.sessions import ConsoleSessions
from seawall.manager.peer_listener import PEER_LISTENER_KEY
from seawall.units import format_bytes

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
API_PATHS = ("/api/", "/health", "/metrics", "/docs", "/redoc", "/openapi.json")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
]

OWN_POLICY_HEADERS = {b"content-security-policy", b"x-frame-options"}
"""What a route may set for itself (both or neither): ``records_pages`` for a report."""


class ConsoleMount(Mount):
    """A mount at ``/`` that leaves the API's paths to the API, and is not served on the
    peer API's listener (the same app, for paired managers: they get no console)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(API_PATHS):
            return Match.NONE, {}
        if (scope.get("state") or {}).get(PEER_LISTENER_KEY):
            return Match.NONE, {}
        return super().matches(scope)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                given = message.get("headers", [])
                # A route that sets its own policy (a report's page) keeps it, framing too.
                own = {k.lower() for k, _ in given} & OWN_POLICY_HEADERS
                if own and own != OWN_POLICY_HEADERS:
                    raise RuntimeError("a console answer set half of its own policy")
                headers = [(k, v) for k, v in given
                           if k.lower() not in {h for h, _ in SECURITY_HEADERS} - own]
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in own]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def mount(parent: FastAPI) -> None:
    """Serve the console at ``/`` of the manager's API app (its services on ``state``)."""
    parent.router.routes.append(ConsoleMount("/", app=create_console(parent)))


def page_templates() -> Jinja2Templates:
    """The console's templates, with the filters that format figures (``views``)."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(duration=views.format_duration, rate=views.format_rate,
                                 ratio=views.format_ratio, time_ns=views.format_time_ns,
                                 iso=views.format_iso, bytes=format_bytes,
                                 readable=files_views.readable)
    return templates


def create_console(parent: FastAPI) -> FastAPI:
    console = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    console.state.manager = parent.state
    console.state.console_sessions = ConsoleSessions(parent.state.access.sessions)
    console.state.cookie_name = cookie_name(parent.state.sites.config.site_id)
    templates = page_templates()
    console.state.templates = templates
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for pages in (router, files_router, admin_router, records_router, recovery_router):
        console.include_router(pages)
    console.state.starting_tests = StartingTests()
    console.add_middleware(SecurityHeaders)
    install_error_pages(console, parent, templates)
    return console


def install_error_pages(console: FastAPI, parent: FastAPI, templates: Jinja2Templates) -> None:
    def page(request: Request, status: int, title: str, message: str) -> Response:
        return templates.TemplateResponse(request, "error.html", {
            "title": title, "message": message, "user": None,
            "site": parent.state.sites.config.name}, status_code=status)

    @console.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=200, headers={"HX-Redirect": "/login"})
        return RedirectResponse("/login", status_code=303)

    @console.exception_handler(SeawallError)
    async def _refused(request: Request, exc: SeawallError) -> Response:
        request.state.error_body = exc.body()  # for the event log
        return page(request, exc.http_status, f"Refused ({exc.code})", exc.message)

    @console.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                            for e in exc.errors())
        return page(request, 400, "Invalid request", details)

    @console.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        title = "Not found" if exc.status_code == 404 else f"HTTP {exc.status_code}"
        return page(request, exc.status_code, title,
                    f"{request.method} {request.url.path}: {exc.detail}")

    @console.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.exception("console: %s %s failed", request.method, request.url.path)
        return page(request, 500, "Internal error", "The request failed; the site "
                    "manager's log has the details.")
