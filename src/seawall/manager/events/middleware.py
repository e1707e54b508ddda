"""EventMiddleware: records every mutating API call (POST, PUT, PATCH, DELETE) in the event log.

A plain ASGI middleware around the whole app, so a route added anywhere is recorded
without being named here. It watches the request's body and the response going by and,
once the response is sent, records one ``EventEntry`` (``entry_for``, pure):

- who: ``request.state.user`` as the access guard leaves it (a user's name, or the
  peer-site marker); for a request the guard did not name (refused before it ran: an
  unknown route, a body over its limit) the owner of its bearer token if it is valid
  (``identify``); else ``anonymous``. A refused request names its caller as a served one;
- what: the route's endpoint name (``create_group`` → "create group"), or METHOD PATH for
  a path no route matched;
- target and group: the route's path parameters, else the body's naming fields (only
  those: bodies may carry passwords and tokens, which are never stored);
- outcome: ok (with the id the answer names, if any), or the error's code and message
  exactly as the caller got them (an answer that is a page, the console's, leaves its
  error's JSON body in the request's state as ``error_body``); an exception no handler
  turned into an answer is ``internal``.

Recording runs in a worker thread (a database write) after the answer was sent, and a
failure to record is logged (once while they go on failing: a full disk fails them all),
never turned into a failed request.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seawall.manager.events.log import EventEntry, EventLog

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_LIMIT_BYTES = 64 << 10
"""Bodies are kept up to this size for parsing; a longer one is not parsed."""
NAMING_FIELDS = ("name", "group", "volume", "peer_url", "uri", "to")
MESSAGE_MAX = 2000
ANONYMOUS = "anonymous"


class EventMiddleware:
    def __init__(self, app: ASGIApp, events: EventLog,
                 identify: Callable[[str], str | None]) -> None:
        """``identify``: the name of the user owning a bearer token, None if not valid."""
        self.app = app
        self.events = events
        self.identify = identify
        self._failing = False  # the last record failed: the next failure is not logged

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        at, started_s = datetime.now(UTC), time.monotonic()
        request_body, response_body = bytearray(), bytearray()
        status = [500]

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(request_body) <= BODY_LIMIT_BYTES:
                request_body.extend(message.get("body", b""))
            return message

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body" and \
                    len(response_body) <= BODY_LIMIT_BYTES:
                response_body.extend(message.get("body", b""))
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, watched_receive, watched_send)
        except Exception as exc:
            failure = exc
            raise
        finally:
            entry = entry_for(scope, at, status[0], _json(request_body), _json(response_body),
                              failure, (time.monotonic() - started_s) * 1000)
            await anyio.to_thread.run_sync(self._record, entry, _bearer(scope))

    def _record(self, entry: EventEntry, bearer: str | None) -> None:
        try:
            if entry.user == ANONYMOUS and bearer is not None:
                entry = dataclasses.replace(entry, user=self.identify(bearer) or ANONYMOUS)
            self.events.record(entry)
        except Exception as exc:  # the operation's answer stands; only its record is missing
            if not self._failing:
                log.error("cannot record events (%s), starting with %s %s; logged once "
                          "until one is recorded again", getattr(exc, "orig", None) or exc,
                          entry.operation, entry.target)
            self._failing = True
            return
        if self._failing:
            log.warning("events are recorded again")
        self._failing = False


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


def _json(body: bytearray) -> Any:
    if not body or len(body) > BODY_LIMIT_BYTES:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def entry_for(scope: Scope, at: datetime, status_code: int, request: Any, response: Any,
              failure: BaseException | None, duration_ms: float) -> EventEntry:
    """The event of one call, from its scope (route, path parameters, state) and bodies."""
    route = scope.get("route")
    template = str(getattr(route, "path", "") or scope["path"])
    name = getattr(route, "name", None)
    operation = name.replace("_", " ") if name else f"{scope['method']} {scope['path']}"
    params = {k: str(v) for k, v in (scope.get("path_params") or {}).items()}
    body = request if isinstance(request, dict) else {}
    state = scope.get("state") or {}
    answer = response if isinstance(response, dict) else state.get("error_body") or {}
    group = params.get("group") or (params.get("name") if "/groups/{name}" in template else None)
    if group is None and isinstance(body.get("group"), str):
        group = body["group"]
    if group is None and template.endswith("/groups") and isinstance(body.get("name"), str):
        group = body["name"]
    target = "/".join(params.values()) or next(
        (str(body[f]) for f in NAMING_FIELDS if isinstance(body.get(f), str | int)), None)
    error_code: str | None = None
    if failure is not None:
        error_code, message = "internal", f"{type(failure).__name__}: {failure}"
    elif status_code >= 400:
        error_code = str(answer.get("code") or f"http_{status_code}")
        message = str(answer.get("message") or "")
    else:
        message = " ".join(f"{key} {answer[key]}" for key in ("id", "name", "state")
                           if isinstance(answer.get(key), str | int) and
                           str(answer[key]) != target)
    user = state.get("user") or ANONYMOUS
    return EventEntry(at=at, user=str(user), operation=operation, method=scope["method"],
                      path=scope["path"], group=group, target=target,
                      status_code=status_code if failure is None else 500,
                      error_code=error_code, message=message[:MESSAGE_MAX],
                      duration_ms=round(duration_ms, 3))
