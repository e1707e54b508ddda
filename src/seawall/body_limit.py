"""BodyLimit: a request's body is bounded in size and in time before anything reads it.

An ASGI middleware in front of a whole app (the manager's API and peer API, the agent's
control API over TCP). Without it a framework reads a body whole before looking at it: one
1 GiB ``POST /api/v1/login`` took the manager from 117 MB to 3.24 GB.

Rules:
- Each request has a limit (``limit_for(path)``: its route class's, in bytes). A request
  whose ``Content-Length`` is over it is answered 413 at once; the app never runs and not
  one byte of the body is read. A body without a length (chunked) or longer than its
  length said is counted as it arrives and answered 413 as soon as it passes the limit;
  the app is then told that the client left, and whatever it answers is dropped. At most
  the limit plus one chunk (uvicorn's read buffer, 64 KiB) is ever held.
- A body must have arrived ``body_timeout_s`` after the request began (its headers): a
  client slower than that is answered 408. Once the body is in, the app's waits on
  ``receive`` (a streamed answer listening for a disconnect) are not limited.
- Both refusals carry our error JSON (``SeawallError.body``) and ``Connection: close``: the
  server drops the connection after the answer rather than read the rest of the body.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seawall.errors import RequestTimeout, RequestTooLarge, SeawallError
from seawall.units import format_bytes

JSON_BODY_LIMIT_BYTES = 1 << 20
"""Every route of the manager takes a JSON document: the largest (a group of many volumes,
the pins of many agents) is a few KiB."""
BODY_TIMEOUT_S = 30.0


class BodyLimit:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int],
                 body_timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.limit_for = limit_for
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit_bytes = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit_bytes:
            await _refuse(_too_large(declared, limit_bytes), scope, send)
            return
        deadline_s = anyio.current_time() + self.body_timeout_s
        received_bytes = 0
        body_done = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received_bytes, body_done, refused
            if refused:
                return _disconnect()
            if body_done:
                return await receive()
            with anyio.move_on_after(max(deadline_s - anyio.current_time(), 0)) as wait:
                message = await receive()
            if wait.cancelled_caught:
                refused = True
                await _refuse(RequestTimeout(
                    f"the request's body did not arrive within {self.body_timeout_s:.0f} s"),
                    scope, send)
                return _disconnect()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received_bytes > limit_bytes:
                    refused = True
                    await _refuse(_too_large(None, limit_bytes), scope, send)
                    return _disconnect()
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the app's own answer, unless we answered for it
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _disconnect() -> Message:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


def _too_large(declared: int | None, limit_bytes: int) -> RequestTooLarge:
    size = f"of {format_bytes(declared)} " if declared is not None else ""
    return RequestTooLarge(f"the request's body {size}is over the limit of "
                           f"{format_bytes(limit_bytes)} of this route")


async def _refuse(error: SeawallError, scope: Scope, send: Send) -> None:
    response = JSONResponse(status_code=error.http_status, content=error.body(),
                            headers={"Connection": "close"})

    async def no_body() -> Message:
        return _disconnect()

    await response(scope, no_body, send)
