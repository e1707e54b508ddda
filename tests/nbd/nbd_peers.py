"""Test helpers: an in-memory catalog and two sans-IO peers wired back to back.

Bytes travel between the peers one at a time (or in chunks of ``chunk_bytes``), so
every split point of every message is exercised. The server side is answered by a tiny
in-memory "shell" that behaves like ``seawall.agent.frontend.server`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seawall.errors import ProtocolViolation
from seawall.nbd.client import (
    ClientEvent,
    ClientRequest,
    NbdClientConnection,
    Negotiated,
)
from seawall.nbd.constants import INFO_BLOCK_SIZE
from seawall.nbd.events import (
    NEED_DATA,
    ExportInfo,
    ExportSelected,
    FlushRequest,
    ReadReply,
    ReadRequest,
    ServerEvent,
    SimpleReply,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)
from seawall.nbd.server import NbdServerConnection

DISK_BYTES = 1 << 20
RO_BYTES = 64 * 1024


@dataclass
class MemoryCatalog:
    exports: dict[str, ExportInfo] = field(default_factory=dict)

    def lookup(self, name: str) -> ExportInfo | None:
        return self.exports.get(name)

    def names(self) -> list[str]:
        return list(self.exports)


def make_catalog() -> MemoryCatalog:
    return MemoryCatalog(
        {
            "disk": ExportInfo("disk", DISK_BYTES, read_only=False),
            "ro": ExportInfo("ro", RO_BYTES, read_only=True, description="a read-only image"),
        }
    )


def drain_server(server: NbdServerConnection) -> list[ServerEvent | ProtocolViolation]:
    """Every event until NEED_DATA; a violation raised by the core ends the list."""
    events: list[ServerEvent | ProtocolViolation] = []
    try:
        while (event := server.next_event()) is not NEED_DATA:
            events.append(event)
    except ProtocolViolation as exc:
        events.append(exc)
    return events


class Loopback:
    """A server core and a client core connected by an in-memory, byte-wise pipe."""

    def __init__(self, catalog: MemoryCatalog | None = None, chunk_bytes: int = 1,
                 tls_required: bool = False) -> None:
        self.catalog = catalog or make_catalog()
        self.disks = {
            name: bytearray(info.size_bytes) for name, info in self.catalog.exports.items()
        }
        self.server = NbdServerConnection(self.catalog, tls_required)
        self.client = NbdClientConnection()
        self.chunk_bytes = chunk_bytes
        self.server_events: list[ServerEvent | ProtocolViolation] = []
        self.client_events: list[ClientEvent] = []
        self.raw_to_client = bytearray()
        self.disk: bytearray | None = None
        self.to_client(self.server.initial_bytes())

    # --- pipes -------------------------------------------------------------------------

    def to_client(self, data: bytes) -> None:
        self.raw_to_client += data
        for i in range(0, len(data), self.chunk_bytes):
            self.client.receive_data(data[i : i + self.chunk_bytes])
            while (event := self.client.next_event()) is not NEED_DATA:
                self.client_events.append(event)

    def to_server(self, data: bytes) -> None:
        for i in range(0, len(data), self.chunk_bytes):
            self.server.receive_data(data[i : i + self.chunk_bytes])
            self._serve()

    def server_eof(self) -> None:
        self.server.receive_data(b"")
        self._serve()

    def _serve(self) -> None:
        out = []
        for event in drain_server(self.server):
            self.server_events.append(event)
            reply = self._answer(event)
            if reply is not None:
                out.append(self.server.send(reply))
        out.append(self.server.data_to_send())
        self.to_client(b"".join(out))

    def _answer(self, event: ServerEvent | ProtocolViolation) -> ReadReply | SimpleReply | None:
        if isinstance(event, ExportSelected):
            self.disk = self.disks.setdefault(event.info.name, bytearray(event.info.size_bytes))
            return None
        disk = self.disk
        if isinstance(event, ReadRequest):
            assert disk is not None
            return ReadReply(event.cookie, bytes(disk[event.offset : event.offset + event.length]))
        if isinstance(event, WriteRequest):
            assert disk is not None
            disk[event.offset : event.offset + len(event.data)] = event.data
            return SimpleReply(event.cookie)
        if isinstance(event, WriteZeroesRequest | TrimRequest):
            assert disk is not None
            disk[event.offset : event.offset + event.length] = bytes(event.length)
            return SimpleReply(event.cookie)
        if isinstance(event, FlushRequest):
            return SimpleReply(event.cookie)
        return None

    # --- conveniences ------------------------------------------------------------------

    def handshake(self, name: str = "disk", no_zeroes: bool = True) -> Negotiated:
        self.to_server(self.client.send_client_flags(no_zeroes=no_zeroes))
        self.to_server(self.client.send_go(name, (INFO_BLOCK_SIZE,)))
        negotiated = self.client_events[-1]
        assert isinstance(negotiated, Negotiated), self.client_events
        return negotiated

    def request(self, request: ClientRequest) -> ClientEvent:
        before = len(self.client_events)
        self.to_server(self.client.send(request))
        assert len(self.client_events) == before + 1, self.client_events[before:]
        return self.client_events[-1]

    def take_client_events(self) -> list[ClientEvent]:
        events, self.client_events = self.client_events, []
        return events

    def take_server_events(self) -> list[ServerEvent | ProtocolViolation]:
        events, self.server_events = self.server_events, []
        return events
