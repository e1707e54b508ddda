"""Events and value types shared by the sans-IO NBD server and client.

Rules:
- Events are frozen, slotted dataclasses: cheap to build on the hot path, safe to pass
  between the core and its shell.
- Requests (``ReadRequest``...) are what a server emits and what a client sends; replies
  (``ReadReply``, ``SimpleReply``) are what a server sends and a client emits.
- ``NEED_DATA``, ``LocalProtocolError`` and the way a peer's protocol error is reported
  (``seawall.errors.ProtocolViolation`` raised from ``next_event``) are the convention
  of every sans-IO core (``seawall.sansio``); they are re-exported here.
- ``Disconnect`` means the client ended the session politely (NBD_CMD_DISC, NBD_OPT_ABORT,
  or end of stream between messages). After it, or after a ``ProtocolViolation`` (the
  peer broke a MUST, or we cannot continue), the connection accepts no more input.
- ``WriteRequest.data`` always holds the whole payload, as an immutable ``bytes`` that the
  receiver may keep (no view into a reused buffer).

Pure code: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from seawall.errors import SeawallError
from seawall.nbd.constants import MAX_PAYLOAD_BYTES
from seawall.sansio import NEED_DATA, LocalProtocolError, NeedData

__all__ = [
    "NEED_DATA",
    "Disconnect",
    "ExportCatalog",
    "ExportInfo",
    "ExportSelected",
    "FlushRequest",
    "LocalProtocolError",
    "NbdError",
    "NeedData",
    "ReadReply",
    "ReadRequest",
    "Reply",
    "Request",
    "ServerEvent",
    "SimpleReply",
    "StartTls",
    "TrimRequest",
    "WriteRequest",
    "WriteZeroesRequest",
]


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What a client learns about an export during the handshake."""

    name: str
    size_bytes: int
    read_only: bool
    description: str = ""
    min_block_bytes: int = 1
    preferred_block_bytes: int = 4096
    max_block_bytes: int = MAX_PAYLOAD_BYTES
    can_trim: bool = True  # advertise TRIM (a capture sink does not: see agent/protect/sink)

    def __post_init__(self) -> None:
        if self.size_bytes < 0 or self.size_bytes >= 1 << 63:
            raise ValueError(f"export size out of range: {self.size_bytes}")
        # The block-size rules of proto.md: min and preferred are powers of two, min <= 64 KiB,
        # preferred >= min, max a multiple of min.
        if not _is_power_of_two(self.min_block_bytes) or self.min_block_bytes > 65536:
            raise ValueError(f"bad minimum block size {self.min_block_bytes}")
        if (
            not _is_power_of_two(self.preferred_block_bytes)
            or self.preferred_block_bytes < self.min_block_bytes
        ):
            raise ValueError(f"bad preferred block size {self.preferred_block_bytes}")
        if self.max_block_bytes % self.min_block_bytes or self.max_block_bytes > MAX_PAYLOAD_BYTES:
            raise ValueError(f"bad maximum block size {self.max_block_bytes}")


class ExportCatalog(Protocol):
    """The exports a server connection may hand out (looked up during the handshake)."""

    def lookup(self, name: str) -> ExportInfo | None: ...

    def names(self) -> list[str]: ...


class NbdError(SeawallError):
    """An NBD peer answered a request or option with an error (client side)."""

    fault = "remote"
    code = "nbd_error"

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


# --- server-side events (client-side requests) ----------------------------------------


@dataclass(frozen=True, slots=True)
class ExportSelected:
    """The handshake is over; the connection now serves ``info``."""

    info: ExportInfo


@dataclass(frozen=True, slots=True)
class ReadRequest:
    cookie: int
    offset: int
    length: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class WriteRequest:
    cookie: int
    offset: int
    data: bytes | memoryview
    fua: bool = False


@dataclass(frozen=True, slots=True)
class FlushRequest:
    cookie: int


@dataclass(frozen=True, slots=True)
class TrimRequest:
    cookie: int
    offset: int
    length: int
    fua: bool = False


@dataclass(frozen=True, slots=True)
class WriteZeroesRequest:
    cookie: int
    offset: int
    length: int
    fua: bool = False
    no_hole: bool = False


@dataclass(frozen=True, slots=True)
class StartTls:
    """NBD_OPT_STARTTLS was acknowledged: the shell runs the TLS handshake now, server side,
    then calls ``NbdServerConnection.tls_started`` (or drops the connection if it fails)."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: str = "client disconnect"


# --- replies ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadReply:
    """A successful read: ``data`` is exactly the requested length."""

    cookie: int
    data: bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class SimpleReply:
    """A reply without payload: success (``error == 0``) or an NBD error value."""

    cookie: int
    error: int = 0


Request = ReadRequest | WriteRequest | FlushRequest | TrimRequest | WriteZeroesRequest
ServerEvent = ExportSelected | StartTls | Request | Disconnect
Reply = ReadReply | SimpleReply
