"""How the manager reaches its agent (Unix socket) and its paired peers (HTTP)."""

from __future__ import annotations

from seawall.config import SiteConfig
from seawall.http import JsonClient


def agent_client(config: SiteConfig, timeout_s: float = 30.0) -> JsonClient:
    return JsonClient("http://agent", uds=str(config.agent_socket), timeout_s=timeout_s,
                      what="the site's agent")


def peer_client(api_url: str, timeout_s: float = 30.0) -> JsonClient:
    return JsonClient(api_url, timeout_s=timeout_s, what=f"peer site {api_url}")
