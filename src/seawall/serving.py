"""Running uvicorn our way: the caller, not uvicorn, decides what a signal does afterwards.

uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would kill the process
before its ``finally`` blocks run (the site runner must still stop its agent then).
``Server(handle_signals=True)`` shuts down gracefully on those signals and returns;
``handle_signals=False`` leaves signals alone (the agent handles them in its own loop).
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Generator
from types import FrameType

import uvicorn

from seawall.errors import InvalidInput


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
