"""Reading wire-protocol events from an asyncio stream (shared by shipper and receiver)."""

from __future__ import annotations

import asyncio

from seawall.wire.protocol import NEED_DATA, Event, WireConnection


async def read_event(connection: WireConnection, reader: asyncio.StreamReader,
                     chunk_bytes: int) -> Event:
    """The next event, reading from ``reader`` as long as the frame is incomplete; a peer's
    protocol error raises ``ProtocolViolation`` (``seawall.sansio``)."""
    while (event := connection.next_event()) is NEED_DATA:
        connection.receive_data(await reader.read(chunk_bytes))
    return event
