"""The manager's peer API: the same app, served to paired managers over mutual TLS.

Rules:
- It listens on its own port (``SiteConfig.peer_api``), with the site's identity, and takes
  only clients presenting a certificate pinned for a paired site: ``SiteService.peer_tls``,
  whose pins follow pairing and unpairing while it serves. A client with no certificate,
  or one not pinned, fails the TLS handshake: it never reaches HTTP.
- Each connection marks its requests' state (``PEER_LISTENER_KEY``) and carries the
  client's certificate (``PEER_CERT_KEY``, DER), from which the access guard names the
  calling site. The guard serves peer routes only here, and nothing else but health.
- It runs beside the API's server in one event loop, without a lifespan of its own (the
  API's server runs the app's), and stops with it. It has its own limits
  (``seawall.serving.limited_config``: connections, header deadline), so a flood of the
  API's listener does not reach it: the peers' probes of ``/health`` are answered.

uvicorn gives an app no view of the TLS connection, so the protocol class is uvicorn's
h11 one with ``connection_made`` extended: uvicorn copies ``app_state`` into each
request's ``scope["state"]`` (the ASGI lifespan-state extension), and this copy is per
connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from seawall.config import SiteConfig
from seawall.serving import DeadlineH11Protocol, Server, limited_config

PEER_LISTENER_KEY = "peer_listener"
PEER_CERT_KEY = "peer_cert_der"
START_TIMEOUT_S = 30.0


class PeerProtocol(DeadlineH11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        cert_der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.app_state = {**self.app_state, PEER_LISTENER_KEY: True, PEER_CERT_KEY: cert_der}


def peer_server(app: FastAPI, config: SiteConfig, context: ssl.SSLContext) -> Server:
    """The peer API's server: ``app`` behind ``context`` (a ``PinnedServerContext``'s)."""
    host, port = config.peer_api

    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    return Server(limited_config(app, host=host, port=port, http=PeerProtocol, lifespan="off",
                                 ssl_context_factory=factory),
                  handle_signals=False)


async def serve_with_peer_api(api: Server, peer: Server) -> None:
    """Run the peer API's server and the API's; when either stops, stop the other."""
    peer_task = asyncio.create_task(peer.serve())
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while not peer.started and not peer_task.done():  # listening before the API answers
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    api_task = asyncio.create_task(api.serve())
    try:
        await asyncio.wait((api_task, peer_task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        api.should_exit = peer.should_exit = True
        await asyncio.gather(api_task, peer_task)
