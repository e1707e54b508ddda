"""The shipper sends only to the recovery site pinned for its group, and never in clear."""

from __future__ import annotations

import asyncio
import ssl
from types import SimpleNamespace
from typing import Any

import pytest

from seawall.agent.protect.shipper import Shipper
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.errors import ProtocolViolation
from seawall.localsites import free_port
from seawall.tls import client_context, server_context
from seawall.wan.site_throttle import SiteThrottle
from support.tls_peers import DR, PROD, STRANGER


def shipper(port: int, pinned: str | None) -> tuple[Shipper, list[tuple[str, str]]]:
    spec = ProtectionSpec(group_id="g-1", name="app", target_host="127.0.0.1",
                          target_port=port, target_cert_pem=pinned,
                          volumes=[GroupVolume(index=0, name="disk0", size_bytes=1 << 20)])
    refusals: list[tuple[str, str]] = []
    group: Any = SimpleNamespace(spec=spec, on_refused=lambda *why: refusals.append(why))
    tls = client_context(PROD, pinned) if pinned else None
    return Shipper(group, "prod", SiteThrottle(None), tls), refusals


def test_a_group_without_a_pinned_certificate_does_not_connect() -> None:
    port = free_port()
    subject, refusals = shipper(port, pinned=None)

    async def scenario() -> None:
        connected = asyncio.Event()
        server = await asyncio.start_server(lambda _r, _w: connected.set(), "127.0.0.1", port)
        try:
            with pytest.raises(ProtocolViolation, match="unauthenticated"):
                await subject._session()
            await asyncio.sleep(0.05)
            assert not connected.is_set()
        finally:
            server.close()

    asyncio.run(scenario())
    assert [code for code, _ in refusals] == ["unauthenticated"]


def test_an_impostor_listener_gets_no_byte_of_the_stream() -> None:
    """Someone at the recovery site's address, without its key: the handshake fails."""
    port = free_port()
    subject, _ = shipper(port, pinned=DR.cert_pem)
    received: list[bytes] = []

    async def scenario() -> None:
        async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.read(1 << 16))
            writer.close()

        impostor = server_context(STRANGER, [PROD.cert_pem])
        server = await asyncio.start_server(take, "127.0.0.1", port, ssl=impostor)
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await subject._session()
            await asyncio.sleep(0.05)
        finally:
            server.close()

    asyncio.run(scenario())
    assert received in ([], [b""])
