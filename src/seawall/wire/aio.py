"""Reading wire-protocol events from an asyncio stream (shared by shipper and receiver)."""

from __future__ import annotations

import asyncio

from seawall.wire.protocol import Event, NeedData, WireConnection


async def read_event(connection: WireConnection, reader: asyncio.StreamReader,
                     chunk_bytes: int) -> Event:
    """The next event, reading from ``reader`` as long as the frame is incomplete."""
    while True:
        event = connection.next_event()
        if not isinstance(event, NeedData):
            return event
        connection.receive_data(await reader.read(chunk_bytes))
