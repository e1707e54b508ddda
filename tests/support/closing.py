"""Waiting, in a test, for a server to end a connection it should drop."""

from __future__ import annotations

import socket
import ssl

import pytest


def closed_by_server(sock: socket.socket, within_s: float) -> bytes:
    """Read until the server ends the connection; what it sent first. Fails on timeout."""
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        pytest.fail(f"still open after {within_s} s")
    finally:
        sock.close()
    return received
