"""The one mapping between ``SeawallError`` and HTTP, for every server and client we run.

Servers: ``install_error_handler(app)``; errors go out as ``{"code", "message", "fault"}``
with the class's status. Clients: ``JsonClient`` raises the same class back, so a NotReady
raised by an agent reaches the CLI as NotReady (and its exit code).

Deadlines (``JsonClient``): ``timeout_s`` bounds each step of a call (connecting, sending,
each read of the answer, waiting for a pooled connection), so a peer that stops answering
fails the call with a ``PeerError`` naming it, the call and the deadline; a streamed body
gets the same deadline per read, not in total (a long restore goes on while bytes flow).
A client is never entered again by the thread already inside it (a finalizer run by the
garbage collector in the middle of a call): that is refused (``ReentrantCall``) instead of
deadlocking on the connection pool's lock, which has no deadline.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from seawall.api_tls import is_verify_failure
from seawall.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PeerError,
    RateLimited,
    SeawallError,
    Unauthorized,
    error_from_code,
)

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

log = logging.getLogger(__name__)


def install_error_handler(app: FastAPI) -> None:
    # Imported here, not at the top: the CLI imports this module for ``JsonClient`` only,
    # and importing FastAPI would add ~0.27 s to every command's start-up.
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import ValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(SeawallError)
    async def _seawall_error(request: Request, exc: SeawallError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content=exc.body(),
                            headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'][1:])}: {error['msg']}"
            for error in exc.errors()
        )
        error = InvalidInput(details or "invalid request")
        return JSONResponse(
            status_code=422,
            content=error.body(),
        )

    @app.exception_handler(ValidationError)
    async def _contract_error(request: Request, exc: ValidationError) -> JSONResponse:
        # A request to another process, built from its contract model (seawall.contract),
        # that the caller's input does not fit: refused here as the other side would.
        details = "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                            for error in exc.errors())
        return JSONResponse(status_code=422, content=InvalidInput(details).body())

    @app.exception_handler(HTTPException)
    async def _framework_error(request: Request, exc: HTTPException) -> JSONResponse:
        # What the framework answers by itself (a body that is not JSON, an unknown route or
        # method) gets the same shape as ours; its status is kept (400, 404, 405...).
        error = _FRAMEWORK_ERRORS.get(exc.status_code, InvalidInput if exc.status_code < 500
                                      else SeawallError)(str(exc.detail))
        return JSONResponse(
            status_code=exc.status_code,
            content=error.body(),
            headers=exc.headers,
        )


def error_headers(exc: SeawallError) -> dict[str, str] | None:
    """The headers an error's answer carries besides its body (RFC 9110's for 401, 429)."""
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after_s)}
    return None


_FRAMEWORK_ERRORS: dict[int, type[SeawallError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound}


class ReentrantCall(SeawallError):
    """A ``JsonClient`` called by the thread already inside one of its calls (a bug)."""


class JsonClient:
    """A small synchronous JSON client for a manager or an agent (TCP or Unix socket)."""

    def __init__(self, base_url: str, uds: str | None = None, timeout_s: float = 30.0,
                 what: str = "server", token: str | None = None,
                 tls: ssl.SSLContext | None = None,
                 tls_refused: Callable[[], str] | None = None) -> None:
        """``token``: an API token of a manager's user, sent as ``Authorization: Bearer``;
        ``tls``: the context of an ``https`` URL (a peer's pin), instead of the system's CAs;
        ``tls_refused``: the message of a call whose server certificate failed verification
        (why, and what to do), instead of the TLS library's."""
        transport = httpx.HTTPTransport(uds=uds) if uds else None
        self.what = what
        self._tls_refused = tls_refused
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._inside = threading.local()  # ``busy``: this thread is inside a call
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = httpx.Client(base_url=base_url, transport=transport, timeout=timeout_s,
                                    headers=headers, verify=tls if tls is not None else True)

    def request(self, method: str, path: str, json: Any = None,
                params: dict[str, Any] | None = None, timeout_s: float | None = None) -> Any:
        """``timeout_s``: this call's deadline instead of the client's (a call that waits
        for something slow by design, such as VMs shutting down)."""
        response = self._send(method, path, json, params, timeout_s)
        return response.json() if response.content else None

    def text(self, path: str) -> str:
        """GET a text resource (an HTML report); errors come back as for JSON."""
        return self._send("GET", path, None, None).text

    def _send(self, method: str, path: str, json: Any, params: dict[str, Any] | None,
              timeout_s: float | None = None) -> httpx.Response:
        with self._one_call(method, path):
            try:
                response = self._client.request(
                    method, path, json=json, params=params,
                    timeout=self.timeout_s if timeout_s is None else timeout_s)
            except httpx.HTTPError as exc:
                raise self._failure(method, path, exc, timeout_s) from None
        self._raise_for_error(response)
        return response

    @contextlib.contextmanager
    def stream(self, path: str, params: dict[str, Any]) -> Iterator[httpx.Response]:
        """GET a streamed body (a tar archive): errors before the body come back as for
        JSON; a body cut short, or silent for ``timeout_s``, raises ``PeerError`` while it
        is read."""
        try:
            with contextlib.ExitStack() as open_stream:
                with self._one_call("GET", path):
                    response = open_stream.enter_context(
                        self._client.stream("GET", path, params=params))
                if response.status_code >= 400:
                    response.read()
                    self._raise_for_error(response)
                yield response
        except httpx.TimeoutException as exc:
            raise self._failure("GET", path, exc) from None
        except httpx.HTTPError as exc:
            raise PeerError(f"transfer from {self.what} at {self.base_url} failed: {exc}") from None

    @contextlib.contextmanager
    def _one_call(self, method: str, path: str) -> Iterator[None]:
        if getattr(self._inside, "busy", False):
            raise ReentrantCall(f"{method} {path} to {self.what} refused: this thread is "
                                "inside another call of the same client (a finalizer?)")
        self._inside.busy = True
        try:
            yield
        finally:
            self._inside.busy = False

    def _failure(self, method: str, path: str, exc: httpx.HTTPError,
                 timeout_s: float | None = None) -> PeerError:
        if isinstance(exc, httpx.TimeoutException):
            return PeerError(f"{self.what} at {self.base_url} did not answer {method} {path} "
                             f"within {timeout_s or self.timeout_s:g} s")
        if self._tls_refused is not None and is_verify_failure(exc):
            return PeerError(self._tls_refused())
        return PeerError(f"cannot reach {self.what} at {self.base_url}: {exc}")

    def _raise_for_error(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            try:
                body = response.json()
                raise error_from_code(str(body["code"]), str(body["message"]))
            except (ValueError, KeyError, TypeError):
                raise PeerError(
                    f"{self.what} answered {response.status_code}: {response.text[:200]}"
                ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, json: Any = None, timeout_s: float | None = None) -> Any:
        return self.request("POST", path, json=json, timeout_s=timeout_s)

    def put(self, path: str, json: Any = None) -> Any:
        return self.request("PUT", path, json=json)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def close(self) -> None:
        self._client.close()
