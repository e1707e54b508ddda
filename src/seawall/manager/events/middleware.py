"""EventMiddleware: records every mutating API call (POST, PUT, PATCH, DELETE) in the event log.

A plain ASGI middleware around the whole app, so a route added anywhere is recorded
without being named here. It watches the request's body and the response going by and,
once the response is sent, records one ``EventEntry`` (``entry_for``, pure):

- who: ``request.state.user`` as the access guard leaves it (a user's name, or the
  peer-site marker), else ``anonymous``;
- what: the route's endpoint name (``create_group`` → "create group"), or METHOD PATH for
  a path no route matched;
- target and group: the route's path parameters, else the body's naming fields (only
  those: bodies may carry passwords and tokens, which are never stored);
- outcome: ok (with the id the answer names, if any), or the error's code and message
  exactly as the caller got them; an exception no handler turned into an answer is
  ``internal``.

Recording runs in a worker thread (a database write) after the answer was sent, and a
failure to record is logged, never turned into a failed request.
"""

from __future__ import annotations

import json
import logging
import time
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


class EventMiddleware:
    def __init__(self, app: ASGIApp, events: EventLog) -> None:
        self.app = app
        self.events = events

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
            try:
                await anyio.to_thread.run_sync(self.events.record, entry)
            except Exception:  # the operation's answer stands; only its record is missing
                log.exception("could not record event %s %s", entry.operation, entry.target)


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
    answer = response if isinstance(response, dict) else {}
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
    user = (scope.get("state") or {}).get("user") or "anonymous"
    return EventEntry(at=at, user=str(user), operation=operation, method=scope["method"],
                      path=scope["path"], group=group, target=target,
                      status_code=status_code if failure is None else 500,
                      error_code=error_code, message=message[:MESSAGE_MAX],
                      duration_ms=round(duration_ms, 3))
