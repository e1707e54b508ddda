"""The FastAPI dependency that applies ``policy`` to every request of the manager's API.

Installed once for the whole app (``FastAPI(dependencies=[Depends(authorize)])``), so a
route added to any router passes through it; the route's entry in ``policy.POLICY`` says
what it needs, and a route without one is refused. It runs before the body is validated:
an unauthenticated caller learns nothing about a route but that it needs a token.

It serves each route only on its listener (``policy.served``): a peer route asked of the
API, or a user route asked of the peer API, is not found there. A peer route is taken only
from the paired site whose pinned certificate the TLS client presented (the peer
listener puts it in the request's state, ``seawall.manager.peer_listener``); a body's
claim of who is calling counts for nothing.

It leaves ``request.state.user`` (who did it, for the event log: a user's name, ``PEER``
for manager-to-manager calls, None for open routes), ``request.state.principal`` and,
for peer routes, ``request.state.peer_site_id`` (``peer_site``). The user is set as soon
as the token names one, before a refusal by role: the event log names who was refused.

It is a coroutine, and its database lookups go to worker threads: a route that needs no
token (``/health``) is served on the event loop without waiting for a thread.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from seawall.errors import Forbidden, NotFound, Unauthorized
from seawall.manager.access.policy import Access, Decision, access_for, decide, served
from seawall.manager.access.service import AccessService, Principal
from seawall.manager.peer_listener import PEER_CERT_KEY, PEER_LISTENER_KEY
from seawall.manager.sites.service import SiteService

PEER = "peer site"  # not a valid user name, so never mistaken for one

bearer = HTTPBearer(auto_error=False, description="An API token: `seawall login`, or the "
                    "token `seawall site init` printed")


async def authorize(request: Request,
                    credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    path = str(getattr(request.scope.get("route"), "path", ""))
    access = access_for(request.method, path)
    state = request.scope.get("state") or {}
    if not served(request.method, path, bool(state.get(PEER_LISTENER_KEY))):
        raise NotFound(
            f"{request.method} {request.url.path} is served only on the peer API, to paired "
            "sites over mutual TLS (a site paired before that existed must pair again)"
            if access is Access.PEER else
            f"{request.method} {request.url.path} is not served on the peer API")
    if access is Access.PEER:
        await _identify_peer(request, state.get(PEER_CERT_KEY))
    principal: Principal | None = None
    if access is not None and access.role is not None and credentials is not None:
        service: AccessService = request.app.state.access
        principal = await anyio.to_thread.run_sync(service.authenticate,
                                                   credentials.credentials)
    request.state.principal = principal
    request.state.user = principal.name if principal else (
        PEER if access is Access.PEER else None)
    decision = decide(request.method, path, principal.role if principal else None)
    if decision is Decision.UNAUTHENTICATED:
        raise Unauthorized(
            "the API token is invalid, expired or revoked: log in again (`seawall login`)"
            if credentials is not None else
            "authentication required: log in (`seawall login`) or give an API token "
            "(--token or SEAWALL_TOKEN)")
    if decision is Decision.FORBIDDEN:
        if access is None:
            raise Forbidden(f"{request.method} {path or request.url.path} has no access rule")
        assert principal is not None and access.role is not None
        raise Forbidden(f"user {principal.name} ({principal.role.label}) may not "
                        f"{request.method} {path}: it needs the {access.role.label} role")


def current_principal(request: Request) -> Principal:
    """The authenticated caller, for routes whose entry needs a role."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized("authentication required")
    return principal


async def _identify_peer(request: Request, cert_der: bytes | None) -> None:
    sites: SiteService = request.app.state.sites
    site_id = await anyio.to_thread.run_sync(sites.peer_site_id, cert_der)
    if site_id is None:  # the handshake pinned it, but the site was unpaired since
        raise Unauthorized("the calling site is not paired with this one")
    request.state.peer_site_id = site_id


def peer_site(request: Request) -> str:
    """The site id of the paired site calling a peer route (from its TLS certificate)."""
    site_id: str | None = getattr(request.state, "peer_site_id", None)
    if site_id is None:
        raise Unauthorized("not a call from a paired site")
    return site_id
