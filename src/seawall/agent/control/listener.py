"""The agent's control API on TCP, over mutual TLS: for callers on other hosts.

Rules:
- It listens only where configured (``SiteConfig.control_host/port``: ``agent run
  --control``, ``site init --agent-control``), presents the agent's identity
  (``SiteConfig.identity``) and speaks TLS 1.3 only. It serves the same app as the Unix
  socket (``seawall.agent.control.app``), in the same event loop.
- A client must present a pinned certificate, or its handshake fails before any HTTP: the
  manager's (a joined agent: the certificate its manager answered at the join; the
  site's own agent: the site's, which its manager presents), and the extra pins the
  manager sets with ``PUT /control-pins`` (the whole list each time): the other agents of
  groups spanning agents. Pins change while it serves (``seawall.tls.PinnedServerContext``):
  a pin dropped fails the handshakes that follow.
- Extra pins are saved (atomically, ``agent/control_pins.json``) before they take effect,
  so a restarted agent takes the same clients.
- Bodies are bounded (``BODY_LIMIT_BYTES``, 413) and headers and bodies timed
  (``seawall.serving.limited_config``, ``seawall.body_limit``) as on the manager's API.
- A client holding only an extra pin reaches ``/health`` and the coordination routes
  (``/coordination/...``), nothing else; the manager reaches every route. Who a client is
  comes from the certificate of its handshake (per connection), never from the request.
- A request head must be complete within ``seawall.serving.HEADER_TIMEOUT_S`` of the TLS
  handshake and of each response, or the connection is dropped; a request being served
  has no deadline. The TLS handshake itself has asyncio's default limit (60 s): uvicorn
  passes the listener none of its own.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from seawall.atomic import atomic_write_json
from seawall.body_limit import BodyLimit
from seawall.config import SiteConfig
from seawall.errors import CorruptData, Forbidden, InvalidInput
from seawall.serving import HEADER_TIMEOUT_S, DeadlineH11Protocol, Server, limited_config
from seawall.tls import (
    CERT_PEM_MAX_CHARS,
    PinnedServerContext,
    check_certificate,
    der_fingerprint,
    fingerprint,
)

PINS_FILE = "control_pins.json"
CLIENT_CERT_KEY = "control_client_cert_der"
MEMBER_PATHS = frozenset({"/health"})
MEMBER_PREFIX = "/coordination/"
MAX_EXTRA_PINS = 256
BODY_LIMIT_BYTES = 4 << 20
"""The largest body is ``PUT /control-pins``: 256 PEMs of at most 8 KiB, 2 MiB and its JSON."""


def member_may(path: str) -> bool:
    """Whether a member agent (an extra pin, not the manager) may call ``path``."""
    return path in MEMBER_PATHS or path.startswith(MEMBER_PREFIX)


class ControlPins:
    """Who may call the control listener: the manager's pin and the extra pins."""

    def __init__(self, config: SiteConfig) -> None:
        identity = config.identity()
        self.manager_pem = config.manager_cert_pem or identity.cert_pem
        self._manager = fingerprint(self.manager_pem)
        self._path = config.agent_dir / PINS_FILE
        self.extra = self._load()
        self.tls = PinnedServerContext(identity, [self.manager_pem, *self.extra])

    def _load(self) -> list[str]:
        try:
            pems = json.loads(self._path.read_text())["cert_pems"]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptData(f"{self._path} is damaged ({exc}): remove it, and set the "
                              "pins again from the manager") from None
        if not isinstance(pems, list) or not all(isinstance(pem, str) for pem in pems):
            raise CorruptData(f"{self._path} is damaged: cert_pems is not a list of strings")
        return pems

    def replace_extra(self, cert_pems: list[str]) -> dict[str, Any]:
        """Pin exactly ``cert_pems`` besides the manager, saved first; the manager's stays."""
        unique: dict[str, str] = {}
        for pem in cert_pems:
            check_certificate(pem)
            unique.setdefault(fingerprint(pem), pem)
        if len(unique) > MAX_EXTRA_PINS:
            raise InvalidInput(f"at most {MAX_EXTRA_PINS} extra pins, not {len(unique)}")
        unique.pop(self._manager, None)
        pems = list(unique.values())
        atomic_write_json(self._path, {"cert_pems": pems})
        self.extra = pems
        self.tls.replace([self.manager_pem, *pems])
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {"manager": self._manager, "extra": [fingerprint(pem) for pem in self.extra]}

    def is_manager(self, cert_der: bytes | None) -> bool:
        return cert_der is not None and der_fingerprint(cert_der) == self._manager


class PinsBody(BaseModel):
    cert_pems: list[Annotated[str, Field(min_length=1, max_length=CERT_PEM_MAX_CHARS)]] = Field(
        max_length=MAX_EXTRA_PINS)


def pins_router(pins: ControlPins) -> APIRouter:
    """``PUT /control-pins`` (the manager sets the extra pins) and ``GET`` (fingerprints)."""
    router = APIRouter()

    @router.put("/control-pins")
    async def replace_pins(body: PinsBody) -> dict[str, Any]:
        return pins.replace_extra(body.cert_pems)

    @router.get("/control-pins")
    async def list_pins() -> dict[str, Any]:
        return pins.describe()

    return router


class ControlProtocol(DeadlineH11Protocol):
    """uvicorn's h11 protocol, keeping the client's certificate in each request's state."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        cert_der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.app_state = {**self.app_state, CLIENT_CERT_KEY: cert_der}

    def shutdown(self) -> None:
        # An idle keep-alive connection closed politely would wait for the client's TLS
        # close_notify, which an idle client never sends: the agent's stop took the loop's
        # SSL shutdown timeout (30 s). Nothing is in flight on it, so it is dropped.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            super().shutdown()


class MemberGate:
    """ASGI wrapper: a client that is not the manager reaches only ``member_may`` paths."""

    def __init__(self, app: ASGIApp, is_manager: Callable[[bytes | None], bool]) -> None:
        self.app = app
        self.is_manager = is_manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not member_may(scope["path"]) and not self.is_manager(
                (scope.get("state") or {}).get(CLIENT_CERT_KEY)):
            error = Forbidden(f"{scope['path']} is for the site manager only; other agents "
                              "reach /health and /coordination/... here")
            response = JSONResponse(status_code=error.http_status, content=error.body())
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def control_server(app: ASGIApp, pins: ControlPins,
                   head_timeout_s: float = HEADER_TIMEOUT_S) -> Server:
    """The TCP listener's server: ``app`` behind ``pins`` (serve it the bound socket)."""

    timeout_s = head_timeout_s  # a class body cannot read a name it assigns from outside

    class Protocol(ControlProtocol):
        header_timeout_s = timeout_s

    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return pins.tls.context

    gated = BodyLimit(MemberGate(app, pins.is_manager), lambda _path: BODY_LIMIT_BYTES)
    return Server(limited_config(gated, http=Protocol, lifespan="off",
                                 ssl_context_factory=factory),
                  handle_signals=False)
