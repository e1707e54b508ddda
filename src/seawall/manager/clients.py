"""How the manager reaches its agent (Unix socket) and its paired peers (mutual TLS).

A peer is called on its peer API (``Peer.peer_api_url``, learnt at pairing) only: the
client presents this site's identity and takes only the certificate pinned for that peer
(``seawall.tls.client_context``: the pin is the one trust anchor, host names are not
checked). The pairing handshake itself goes to the peer's plain API, before any pin.
"""

from __future__ import annotations

from seawall.config import SiteConfig
from seawall.errors import Conflict
from seawall.http import JsonClient
from seawall.manager.models import Peer
from seawall.tls import client_context

PEER_DEADLINE_S = 30.0
"""How long a call to a paired site's manager may go unanswered (each step:
``seawall.http``'s deadlines). A call to the agent waits ``SiteConfig.agent_deadline_s``."""


def agent_client(config: SiteConfig, timeout_s: float | None = None) -> JsonClient:
    return JsonClient("http://agent", uds=str(config.agent_socket),
                      timeout_s=config.agent_deadline_s if timeout_s is None else timeout_s,
                      what="the site's agent")


def peer_client(config: SiteConfig, peer: Peer, timeout_s: float = PEER_DEADLINE_S) -> JsonClient:
    """A client of ``peer``'s peer API, authenticated both ways by the pinned certificates."""
    if peer.cert_pem is None or peer.peer_api_url is None:
        raise Conflict(f"site {peer.name} was paired before managers spoke mutual TLS: pair "
                       "again (`seawall site token` there, `seawall pair URL --token TOKEN` "
                       "here); groups and settings are kept")
    return JsonClient(peer.peer_api_url, timeout_s=timeout_s, what=f"peer site {peer.name}",
                      tls=client_context(config.identity(), peer.cert_pem))
