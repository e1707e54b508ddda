"""The console's pages and forms: parse, call the services the API's routes call, render.

Rules:
- Every page but the login needs a valid session (``signed_in``; else ``SignInNeeded``:
  to the login page). The dashboard's polled fragment does not move the session's idle
  deadline (``touch=False``): an open dashboard nobody looks at still times out.
- A POST is taken only from this origin (``Origin``, when the browser sends one) and,
  once signed in, only with the session's CSRF token (form field or htmx's header), then
  only from a user whose role the API's policy table allows the matching API route
  (``ConsoleUser.may``): the same refusal, with the same words, as the API's guard.
- The user's name goes to ``request.state.user`` as the API's guard leaves it, so the
  event log (its middleware wraps the console too) names who did what; endpoints are
  named as the API's (``login``, ``tag_checkpoint``, ``update_settings``, ...), so both
  log the same operation. Forms hold no JSON, so no body (no password) is ever logged;
  a refusal leaves its error in ``request.state.error_body``, which the log records as
  it records the API's JSON error.
- Service calls run in worker threads (they block on the database and the agents).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from seawall.errors import Forbidden, InvalidInput, SeawallError
from seawall.manager.access.hashing import PASSWORD_MAX_CHARS
from seawall.manager.console import views
from seawall.manager.console.policy import CSRF_FIELD, CSRF_HEADER, csrf_ok, same_origin
from seawall.manager.console.sessions import ConsoleSessions, ConsoleUser
from seawall.manager.groups.options_text import settings_body

router = APIRouter(include_in_schema=False)

TAG = ("POST", "/api/v1/groups/{name}/checkpoints")
UPDATE_SETTINGS = ("PATCH", "/api/v1/groups/{name}/settings")
ACKNOWLEDGE = ("POST", "/api/v1/alerts/{alert_id}/acknowledge")
EVENTS_SHOWN = 200


class SignInNeeded(Exception):
    """No valid session: the answer sends the browser to the login page."""


def _sessions(request: Request) -> ConsoleSessions:
    sessions: ConsoleSessions = request.app.state.console_sessions
    return sessions


def _manager(request: Request) -> Any:
    return request.app.state.manager  # the manager app's state: its services


def _user(request: Request, touch: bool) -> ConsoleUser:
    session_id = request.cookies.get(request.app.state.cookie_name)
    user = _sessions(request).resolve(session_id, touch)
    if user is None:
        raise SignInNeeded
    request.state.user = user.principal.name
    return user


def signed_in(request: Request) -> ConsoleUser:
    return _user(request, touch=True)


def polling(request: Request) -> ConsoleUser:
    return _user(request, touch=False)


async def _checked_form(request: Request, user: ConsoleUser | None,
                        operation: tuple[str, str] | None = None) -> FormData:
    """The POST's form, once its origin, CSRF token and the user's role are checked."""
    if not same_origin(request.headers.get("origin"), request.headers.get("host")):
        raise Forbidden("the form was sent from another site")
    form = await request.form()
    if user is None:
        return form
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not csrf_ok(user.csrf_token, given if isinstance(given, str) else None):
        raise Forbidden("the form's CSRF token is missing or not this session's: reload the "
                        "page and send it again")
    if operation is not None:
        refuse_unless(user, operation)
    return form


def refuse_unless(user: ConsoleUser, operation: tuple[str, str]) -> None:
    """Forbidden, in the API guard's words, unless the user's role may call the API route."""
    if not user.may(*operation):
        method, path = operation
        raise Forbidden(f"user {user.principal.name} ({user.principal.role.label}) may not "
                        f"{method} {path}: it needs a higher role")


def _text(form: FormData, field: str, max_chars: int = 512) -> str:
    value = form.get(field)
    text = value if isinstance(value, str) else ""
    if len(text) > max_chars:
        raise InvalidInput(f"{field} is longer than {max_chars} characters")
    return text


def _render(request: Request, template: str, context: dict[str, Any],
            user: ConsoleUser | None, status_code: int = 200) -> Response:
    templates = request.app.state.templates
    response: Response = templates.TemplateResponse(
        request, template, {**context, "user": user, "site": _manager(request).sites.config.name},
        status_code=status_code)
    return response


# --- signing in and out ---------------------------------------------------------------


@router.get("/login")
def login_page(request: Request) -> Response:
    if _sessions(request).resolve(request.cookies.get(request.app.state.cookie_name), False):
        return RedirectResponse("/", status_code=303)
    return _render(request, "login.html", {"error": None, "name": ""}, None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _checked_form(request, None)
    name, password = _text(form, "user", 64), _text(form, "password", PASSWORD_MAX_CHARS)
    request.state.user = name or None
    sessions = _sessions(request)
    source = request.client.host if request.client else "unknown"
    try:
        if not name or not password:
            raise InvalidInput("give a user name and a password")
        token = await _manager(request).login.login(
            name, password, source, sessions.policy.absolute_s, "console")
    except SeawallError as exc:
        request.state.error_body = exc.body()  # for the event log
        return _render(request, "login.html", {"error": exc.message, "name": name}, None,
                       status_code=exc.http_status)
    session_id, _csrf = await run_in_threadpool(sessions.open, token["id"])
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(request.app.state.cookie_name, session_id, path="/", secure=True,
                        httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    await _checked_form(request, user)
    session_id = request.cookies.get(request.app.state.cookie_name, "")
    await run_in_threadpool(_sessions(request).close, session_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(request.app.state.cookie_name, path="/", secure=True,
                           httponly=True, samesite="strict")
    return response


# --- dashboard ------------------------------------------------------------------------


def peers_with_reach(manager: Any) -> list[dict[str, Any]]:
    """The paired sites, each with whether the status monitor reaches it (None: not yet
    tried) and its error."""
    reach = manager.status.peer_errors()
    return [{**peer, "reachable": None if peer["name"] not in reach else
             reach[peer["name"]] is None, "error": reach.get(peer["name"])}
            for peer in manager.sites.peers()]


def _overview(manager: Any) -> dict[str, Any]:
    """Sites and peers, agents, and every group's status with its active alerts."""
    alerts = manager.alerts.list()
    groups = manager.status.documents()
    for group in groups:
        group["rpo_level"] = views.rpo_level(group["rpo_s"], group["rpo_alert_s"])
        group["alert_count"] = sum(1 for a in alerts if a["group"] == group["group"])
    return {"groups": groups, "peers": peers_with_reach(manager),
            "agents": manager.agents.list_with_status(),
            "alert_count": len(alerts),
            "updated_at": datetime.now(UTC).strftime("%H:%M:%S UTC")}


@router.get("/")
def dashboard(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    return _render(request, "dashboard.html", _overview(_manager(request)), user)


@router.get("/fragments/overview")
def overview_fragment(request: Request, user: ConsoleUser = Depends(polling)) -> Response:
    return _render(request, "overview.html", _overview(_manager(request)), user)


# --- a group --------------------------------------------------------------------------


def _group_page(request: Request, user: ConsoleUser, name: str,
                notice: str | None = None, error: str | None = None,
                typed: dict[str, str] | None = None) -> dict[str, Any]:
    manager = _manager(request)
    shown = manager.group_settings.show(name)  # NotFound for an unknown group: a 404 page
    status = manager.status.document(name)
    status["rpo_level"] = views.rpo_level(status["rpo_s"], status["rpo_alert_s"])
    try:
        checkpoints = manager.groups.checkpoints(name)
        checkpoints_error = None
    except SeawallError as exc:  # the page still shows the rest
        checkpoints, checkpoints_error = [], exc.message
    for checkpoint in checkpoints:
        checkpoint["kind"] = views.checkpoint_kind(checkpoint)
    return {"group": shown, "status": status, "notice": notice, "error": error,
            "fields": views.setting_fields(shown["settings"], typed),
            "checkpoints": list(reversed(checkpoints)), "checkpoints_error": checkpoints_error,
            "events": manager.events.list(name, 50),
            "may_edit": user.may(*UPDATE_SETTINGS), "may_tag": user.may(*TAG)}


@router.get("/groups/{name}")
def group_page(request: Request, name: str, user: ConsoleUser = Depends(signed_in)) -> Response:
    return _render(request, "group.html", _group_page(request, user, name), user)


@router.post("/groups/{name}/settings")
async def update_settings(request: Request, name: str,
                          user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, UPDATE_SETTINGS)
    typed = {field: _text(form, field, 64).strip() for field, *_ in views.EDITABLE}
    try:
        change = settings_body(**{field: text for field, text in typed.items() if text})
        result = await run_in_threadpool(_manager(request).group_settings.update, name, change)
    except SeawallError as exc:
        request.state.error_body = exc.body()
        context = await run_in_threadpool(_group_page, request, user, name, None,
                                          exc.message, typed)
        return _render(request, "group.html", context, user, status_code=exc.http_status)
    changed = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in result["changed"].items())
    context = await run_in_threadpool(_group_page, request, user, name,
                                      f"changed: {changed}" if changed else "nothing changed")
    return _render(request, "group.html", context, user)


@router.post("/groups/{name}/checkpoints")
async def tag_checkpoint(request: Request, name: str,
                         user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, TAG)
    tag = _text(form, "name").strip()
    checkpoint = await run_in_threadpool(_manager(request).groups.tag, name, tag)
    context = await run_in_threadpool(_group_page, request, user, name,
                                      f"checkpoint {checkpoint['id']} tagged {tag!r}")
    return _render(request, "group.html", context, user, status_code=201)


# --- alerts and events ----------------------------------------------------------------


def _alerts_page(request: Request, user: ConsoleUser, notice: str | None) -> dict[str, Any]:
    return {"alerts": _manager(request).alerts.list(include_cleared=True), "notice": notice,
            "may_acknowledge": user.may(*ACKNOWLEDGE)}


@router.get("/alerts")
def alerts_page(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    return _render(request, "alerts.html", _alerts_page(request, user, None), user)


@router.post("/alerts/acknowledge")
async def acknowledge_alert(request: Request,
                            user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, ACKNOWLEDGE)
    alert_id = _text(form, "alert_id", 200)
    await run_in_threadpool(_manager(request).alerts.acknowledge, alert_id,
                            user.principal.name, datetime.now(UTC))
    context = await run_in_threadpool(_alerts_page, request, user, f"{alert_id} acknowledged")
    return _render(request, "alerts.html", context, user)


@router.get("/events")
def events_page(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    events = _manager(request).events.list(None, EVENTS_SHOWN)
    return _render(request, "events.html", {"events": events}, user)
