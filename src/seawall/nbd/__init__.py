"""The NBD protocol: a sans-IO server and client (fixed newstyle, simple replies).

- ``server``: ``NbdServerConnection`` — the state machine the agent's front end drives;
  ``options``: its handshake half (``ServerHandshake``, client flags, options, STARTTLS).
- ``client``: ``NbdClientConnection`` (sans-IO); ``uri``: ``parse_nbd_uri``.
- ``blocking``: ``NbdClient``, a small blocking client over a socket.
- ``events``: the events, ``ExportInfo`` and the ``ExportCatalog`` protocol.
- ``constants``: wire constants and structs.

No module here does I/O except ``blocking``; the asyncio shell is
``seawall.agent.frontend.server``.
"""

from seawall.nbd.blocking import NbdClient
from seawall.nbd.client import NbdClientConnection, Negotiated
from seawall.nbd.events import (
    NEED_DATA,
    Disconnect,
    ExportCatalog,
    ExportInfo,
    ExportSelected,
    FlushRequest,
    LocalProtocolError,
    NbdError,
    ReadReply,
    ReadRequest,
    SimpleReply,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)
from seawall.nbd.server import NbdServerConnection, ServerState
from seawall.nbd.uri import NbdAddress, parse_nbd_uri

__all__ = [
    "NEED_DATA",
    "Disconnect",
    "ExportCatalog",
    "ExportInfo",
    "ExportSelected",
    "FlushRequest",
    "LocalProtocolError",
    "NbdAddress",
    "NbdClient",
    "NbdClientConnection",
    "NbdError",
    "NbdServerConnection",
    "Negotiated",
    "ReadReply",
    "ReadRequest",
    "ServerState",
    "SimpleReply",
    "TrimRequest",
    "WriteRequest",
    "WriteZeroesRequest",
    "parse_nbd_uri",
]
