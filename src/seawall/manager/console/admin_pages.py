"""Users and tokens, agents and join tokens, pairing: parse, call the services the API's
routes call (``AccessService``, ``AgentDirectory``, ``SiteService``), render.

Rules:
- Each form is a POST with the session's CSRF token, refused unless the user's role may
  call the matching API route (``ROUTES``), exactly as ``routes._checked_form`` does for
  every console form; a page shows a form only to a user who may send it.
- A secret made here (an API token, an agent's join token, a pairing token) is shown once,
  in the answer to the POST that made it, and never again: only its hash is kept, as
  with the CLI. The answer is ``no-store`` like every console page.
- Durations are typed as the CLI takes them (``1h``, ``30m``); the services' messages
  come back on the page, with what was typed kept in the form.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from seawall.errors import InvalidInput, SeawallError
from seawall.join_tokens import DEFAULT_TTL_S
from seawall.manager.access.hashing import PASSWORD_MAX_CHARS
from seawall.manager.console.routes import (
    _checked_form,
    _manager,
    _render,
    _text,
    peers_with_reach,
    signed_in,
)
from seawall.manager.console.sessions import ConsoleUser
from seawall.tls import fingerprint
from seawall.units import parse_duration_s

router = APIRouter(include_in_schema=False)

LIST_USERS = ("GET", "/api/v1/users")
CREATE_USER = ("POST", "/api/v1/users")
DELETE_USER = ("DELETE", "/api/v1/users/{name}")
CREATE_TOKEN = ("POST", "/api/v1/tokens")
REVOKE_TOKEN = ("DELETE", "/api/v1/tokens/{token_id}")
JOIN_TOKEN = ("POST", "/api/v1/agents/token")
PAIRING_TOKEN = ("POST", "/api/v1/pairing/token")
PAIR = ("POST", "/api/v1/pairing")


def _duration(text: str, what: str) -> float | None:
    if not text.strip():
        return None
    try:
        return parse_duration_s(text.strip())
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None


# --- users and tokens -----------------------------------------------------------------


def _users_page(request: Request, user: ConsoleUser, **shown: Any) -> dict[str, Any]:
    access = _manager(request).access
    may_manage = user.may(*LIST_USERS)
    return {"users": access.list_users() if may_manage else [],
            "tokens": access.list_tokens(user.principal.name),
            "this_token": user.principal.token_id, "may_manage": may_manage,
            "may_create_user": user.may(*CREATE_USER), "may_delete_user": user.may(*DELETE_USER),
            "may_create_token": user.may(*CREATE_TOKEN), "may_revoke": user.may(*REVOKE_TOKEN),
            "notice": None, "error": None, "new_token": None, "typed": {}, **shown}


async def _users_answer(request: Request, user: ConsoleUser, status_code: int = 200,
                        **shown: Any) -> Response:
    context = await run_in_threadpool(lambda: _users_page(request, user, **shown))
    return _render(request, "users.html", context, user, status_code=status_code)


@router.get("/users")
def users_page(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    return _render(request, "users.html", _users_page(request, user), user)


@router.post("/users")
async def create_user(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, CREATE_USER)
    name, role = _text(form, "name", 64).strip(), _text(form, "role", 16)
    password = _text(form, "password", PASSWORD_MAX_CHARS)
    try:
        if not password:
            raise InvalidInput("give the new user a password (at least one character)")
        created = await run_in_threadpool(_manager(request).access.create_user, name, role,
                                          password)
    except SeawallError as exc:
        request.state.error_body = exc.body()
        return await _users_answer(request, user, exc.http_status, error=exc.message,
                                   typed={"name": name, "role": role})
    return await _users_answer(request, user, 201,
                               notice=f"user {created['name']} created ({created['role']})")


@router.post("/users/delete")
async def delete_user(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, DELETE_USER)
    name = _text(form, "name", 64)
    await run_in_threadpool(_manager(request).access.delete_user, name)
    return await _users_answer(request, user, notice=f"user {name} deleted")


@router.post("/tokens")
async def create_token(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, CREATE_TOKEN)
    name, lifetime = _text(form, "name", 64).strip(), _text(form, "expires", 16)
    try:
        created = await run_in_threadpool(_manager(request).access.create_token,
                                          user.principal.name, name,
                                          _duration(lifetime, "expires"))
    except SeawallError as exc:
        request.state.error_body = exc.body()
        return await _users_answer(request, user, exc.http_status, error=exc.message,
                                   typed={"token_name": name, "expires": lifetime})
    return await _users_answer(request, user, 201, new_token=created,
                               notice=f"token {created['id']} created")


@router.post("/tokens/revoke")
async def revoke_token(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, REVOKE_TOKEN)
    token_id = _text(form, "token_id", 64)
    await run_in_threadpool(_manager(request).access.revoke_token, user.principal.name,
                            token_id)
    return await _users_answer(request, user, notice=f"token {token_id} revoked")


# --- agents and join tokens -----------------------------------------------------------


def _agents_page(request: Request, user: ConsoleUser, **shown: Any) -> dict[str, Any]:
    return {"agents": _manager(request).agents.list_with_status(),
            "may_join": user.may(*JOIN_TOKEN), "join": None, "error": None,
            "ttl": "1h", **shown}


@router.get("/agents")
def agents_page(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    return _render(request, "agents.html", _agents_page(request, user), user)


@router.post("/agents/token")
async def join_token(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, JOIN_TOKEN)
    ttl = _text(form, "ttl", 16)
    try:
        made = await run_in_threadpool(_manager(request).agents.new_token,
                                       _duration(ttl, "lifetime") or DEFAULT_TTL_S)
    except SeawallError as exc:
        request.state.error_body, message = exc.body(), exc.message
        context = await run_in_threadpool(
            lambda: _agents_page(request, user, error=message, ttl=ttl))
        return _render(request, "agents.html", context, user, status_code=exc.http_status)
    context = await run_in_threadpool(lambda: _agents_page(request, user, join=made))
    return _render(request, "agents.html", context, user, status_code=201)


# --- pairing --------------------------------------------------------------------------


def _pairing_page(request: Request, user: ConsoleUser, **shown: Any) -> dict[str, Any]:
    manager = _manager(request)
    info = manager.sites.info()
    return {"peers": peers_with_reach(manager), "info": info,
            "fingerprint": fingerprint(info["cert_pem"]), "may_pair": user.may(*PAIR),
            "may_make_token": user.may(*PAIRING_TOKEN), "pairing_token": None,
            "notice": None, "error": None, "peer_url": "", **shown}


@router.get("/pairing")
def pairing_page(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    return _render(request, "pairing.html", _pairing_page(request, user), user)


@router.post("/pairing/token")
async def pairing_token(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    await _checked_form(request, user, PAIRING_TOKEN)
    token = await run_in_threadpool(_manager(request).sites.new_token)
    context = await run_in_threadpool(lambda: _pairing_page(request, user,
                                                            pairing_token=token))
    return _render(request, "pairing.html", context, user, status_code=201)


@router.post("/pairing")
async def pair(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, PAIR)
    peer_url, token = _text(form, "peer_url", 256).strip(), _text(form, "token", 256).strip()
    try:
        if not peer_url or not token:
            raise InvalidInput("give the other site's URL and the pairing token made there")
        peer = await run_in_threadpool(_manager(request).sites.pair, peer_url, token)
    except SeawallError as exc:
        request.state.error_body, message = exc.body(), exc.message
        context = await run_in_threadpool(
            lambda: _pairing_page(request, user, error=message, peer_url=peer_url))
        return _render(request, "pairing.html", context, user, status_code=exc.http_status)
    context = await run_in_threadpool(
        lambda: _pairing_page(request, user, notice=f"paired with site {peer.get('name')}"))
    return _render(request, "pairing.html", context, user)
