"""The one mapping between ``SeawallError`` and HTTP, for every server and client we run.

Servers: ``install_error_handler(app)``; errors go out as ``{"code", "message", "fault"}``
with the class's status. Clients: ``JsonClient`` raises the same class back, so a NotReady
raised by an agent reaches the CLI as NotReady (and its exit code).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from seawall.errors import InvalidInput, PeerError, SeawallError, error_from_code

log = logging.getLogger(__name__)


def install_error_handler(app: FastAPI) -> None:
    @app.exception_handler(SeawallError)
    async def _seawall_error(request: Request, exc: SeawallError) -> JSONResponse:
        return JSONResponse(
            status_code=exc.http_status,
            content={"code": exc.code, "message": exc.message, "fault": exc.fault},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'][1:])}: {error['msg']}"
            for error in exc.errors()
        )
        error = InvalidInput(details or "invalid request")
        return JSONResponse(
            status_code=422,
            content={"code": error.code, "message": error.message, "fault": error.fault},
        )


class JsonClient:
    """A small synchronous JSON client for a manager or an agent (TCP or Unix socket)."""

    def __init__(self, base_url: str, uds: str | None = None, timeout_s: float = 30.0,
                 what: str = "server") -> None:
        transport = httpx.HTTPTransport(uds=uds) if uds else None
        self.what = what
        self.base_url = base_url
        self._client = httpx.Client(base_url=base_url, transport=transport, timeout=timeout_s)

    def request(self, method: str, path: str, json: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        response = self._send(method, path, json, params)
        return response.json() if response.content else None

    def text(self, path: str) -> str:
        """GET a text resource (an HTML report); errors come back as for JSON."""
        return self._send("GET", path, None, None).text

    def _send(self, method: str, path: str, json: Any,
              params: dict[str, Any] | None) -> httpx.Response:
        try:
            response = self._client.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise PeerError(f"cannot reach {self.what} at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                raise error_from_code(str(body["code"]), str(body["message"]))
            except (ValueError, KeyError, TypeError):
                raise PeerError(
                    f"{self.what} answered {response.status_code}: {response.text[:200]}"
                ) from None
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json)

    def put(self, path: str, json: Any = None) -> Any:
        return self.request("PUT", path, json=json)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def close(self) -> None:
        self._client.close()
