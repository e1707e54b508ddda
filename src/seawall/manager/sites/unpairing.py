"""``seawall unpair PEER``: both sites forget each other, pins included.

Rules:
- Refused, at either site, while a group of that site uses the other (any role: protected,
  recovery, failed over); the error names the groups. A refusal changes nothing anywhere.
- The site asked tells the peer first, over the peer API (mutual TLS, so the peer knows
  who asks); the peer removes its row and pins. If the peer cannot be reached (down, or
  it forgot us already and so refuses our certificate), this site goes on alone and says
  so: the operator then unpairs there too.
- Forgetting a peer removes its row, then its pin from the peer API's listener (a new
  context: its certificate fails the next handshakes), then asks the agent to drop it from
  the replication listener's trust. The agent rebuilds that trust from its groups at each
  start too, so an agent that cannot be reached now is only named in the answer.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from seawall.config import SiteConfig
from seawall.contract.agent_api import AgentApi
from seawall.errors import Conflict, NotFound, PeerError, SeawallError
from seawall.http import JsonClient
from seawall.manager.clients import peer_client
from seawall.manager.models import Group, Peer
from seawall.manager.sites.service import SiteService

log = logging.getLogger(__name__)

PEER_TIMEOUT_S = 15.0


def _groups_with(session: Session, site_id: str) -> list[str]:
    return list(session.scalars(
        select(Group.name).where(Group.peer_site_id == site_id).order_by(Group.name)))


class Unpairing:
    def __init__(self, config: SiteConfig, sites: SiteService, agent: JsonClient) -> None:
        self.config = config
        self.sites = sites
        self.agent = agent

    def unpair(self, name: str) -> dict[str, Any]:
        """Forget the paired site ``name``, here and (if it answers) there."""
        with self.sites.sessions() as session:
            peer = self.sites.peer_by_name(session, name)
            self._refuse_if_used(session, peer)
        result: dict[str, Any] = {"peer": name, "peer_told": True}
        try:
            client = peer_client(self.config, peer, timeout_s=PEER_TIMEOUT_S)
        except Conflict as exc:  # a pairing from before the peer API: no channel to tell it
            client, result["peer_told"], result["peer_error"] = None, False, exc.message
        if client is not None:
            try:
                client.delete("/api/v1/peer/pairing")
            except (PeerError, NotFound) as exc:  # its refusal (Conflict) stops us here
                result["peer_told"], result["peer_error"] = False, exc.message
            finally:
                client.close()
        if not result["peer_told"]:
            log.warning("unpairing %s here only, it was not told: %s", name,
                        result["peer_error"], extra={"peer": name})
        return {**result, **self._forget(peer.site_id)}

    def unpaired_by(self, site_id: str) -> dict[str, Any]:
        """The paired site ``site_id`` unpairs: forget it too, unless our groups use it."""
        with self.sites.sessions() as session:
            peer = session.get(Peer, site_id)
            if peer is None:
                raise NotFound("the requesting site is not paired with this one")
            self._refuse_if_used(session, peer)
        self._forget(site_id)
        return {"site": self.config.name}

    def _refuse_if_used(self, session: Session, peer: Peer) -> None:
        groups = _groups_with(session, peer.site_id)
        if groups:
            raise Conflict(f"site {self.config.name} cannot unpair {peer.name}: groups use "
                           f"it: {', '.join(groups)}")

    def _forget(self, site_id: str) -> dict[str, Any]:
        with self.sites.sessions.begin() as session:
            peer = session.get(Peer, site_id)
            if peer is None:
                raise NotFound(f"site {site_id} is not paired with this one")
            self._refuse_if_used(session, peer)  # again, in the transaction that deletes
            cert_pem = peer.cert_pem
            session.delete(peer)
        self.sites.refresh_pins()
        if cert_pem is None:
            return {"agent_forgot": True}
        try:
            AgentApi(self.agent).forget_pin(cert_pem)
            return {"agent_forgot": True}
        except SeawallError as exc:
            log.warning("the agent was not told to forget the pin (it will at its next "
                        "start): %s", exc.message)
            return {"agent_forgot": False, "agent_error": exc.message}
