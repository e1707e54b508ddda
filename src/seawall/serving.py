"""Running uvicorn our way: signals, and what a slow or greedy client may hold.

uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would kill the process
before its ``finally`` blocks run (the site runner must still stop its agent then).
``Server(handle_signals=True)`` shuts down gracefully on those signals and returns;
``handle_signals=False`` leaves signals alone (the agent handles them in its own loop).

Limits (``limited_config``, for every HTTP server we run on TCP):
- a request's headers must be complete ``HEADER_TIMEOUT_S`` after the connection opened or
  its previous answer went out (``DeadlineH11Protocol``): a client sending them byte by
  byte (slowloris) is cut off; uvicorn alone waits for them for ever;
- headers are at most ``HEADER_MAX_BYTES`` (h11 answers 400 past it); an idle kept-alive
  connection is closed after ``KEEP_ALIVE_TIMEOUT_S``;
- at most ``CONNECTIONS_MAX`` connections and requests at once per server: past it uvicorn
  answers 503 at once, so a flood costs bounded memory;
- at the server's stop, idle connections are dropped, not closed with TLS's goodbye (which
  waits for the client's, up to 30 s). Each listener (the manager's API,
  its peer API) is its own server with its own count: a flood on one leaves the other free.
The body's limits are ``seawall.body_limit``'s (the app's side).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Generator
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from seawall.errors import InvalidInput

HEADER_TIMEOUT_S = 10.0
HEADER_MAX_BYTES = 16 << 10
KEEP_ALIVE_TIMEOUT_S = 5
CONNECTIONS_MAX = 1000


def bind_tcp(host: str, port: int, what: str) -> socket.socket:
    """A listener's socket, bound now so that a taken port fails the start clearly."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise InvalidInput(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, handle_signals: bool) -> None:
        super().__init__(config)
        self.handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if not self.handle_signals:
            yield
            return
        previous = {signum: signal.signal(signum, self._on_signal)
                    for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.should_exit = True


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers come too slowly."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers are in
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server stops: an idle connection (or one closing already) is dropped at once.

        Over TLS a close waits for the client's close_notify, up to asyncio's 30 s, and an
        idle pooled client never reads to send one: the server's stop would wait that long
        for every such connection. A request being served still finishes first."""
        if self.cycle is None or self.cycle.response_complete or self.transport.is_closing():
            self.transport.abort()
        else:
            super().shutdown()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout_s,
                                                     self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def limited_config(app: Any, **settings: Any) -> uvicorn.Config:
    """A uvicorn configuration of ``app`` with our limits (``settings`` add to it)."""
    return uvicorn.Config(app, **{
        "http": DeadlineH11Protocol, "timeout_keep_alive": KEEP_ALIVE_TIMEOUT_S,
        "h11_max_incomplete_event_size": HEADER_MAX_BYTES,
        "limit_concurrency": CONNECTIONS_MAX, "log_level": "warning", "log_config": None,
        **settings})
