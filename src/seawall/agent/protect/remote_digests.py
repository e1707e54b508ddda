"""Digests of the recovery site's image, asked for over one replication session.

Rules: requests go out on the session's connection as HASH_REQUEST frames and are answered
in request order (the protocol's rule), so answers are matched first-in first-out. When
the session ends every waiting request fails with ``ConnectionResetError``; the syncer asks
again on the next session (each session pins its own durable seq; see ``Syncer``).
"""

from __future__ import annotations

import asyncio
from collections import deque

from seawall.errors import ProtocolViolation
from seawall.wire.protocol import Hashes, HashRequest, WireConnection


class SessionDigests:
    def __init__(self, connection: WireConnection, writer: asyncio.StreamWriter) -> None:
        self._connection = connection
        self._writer = writer
        self._waiting: deque[tuple[HashRequest, asyncio.Future[bytes]]] = deque()
        self._closed = False

    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        if self._closed or self._writer.is_closing():
            raise ConnectionResetError("replication session ended")
        request = HashRequest(volume, offset, length, block_bytes)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        self._writer.write(self._connection.send(request))
        return await future

    def answer(self, hashes: Hashes) -> None:
        if not self._waiting:
            raise ProtocolViolation("digests that answer no request")
        request, future = self._waiting.popleft()
        if hashes.request != request:
            raise ProtocolViolation(f"digests for {hashes.request} answer {request}")
        if not future.done():  # the syncer may have given up on it meanwhile
            future.set_result(hashes.digests)

    def close(self) -> None:
        self._closed = True
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(ConnectionResetError("replication session ended"))
