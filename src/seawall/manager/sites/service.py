"""Pairing of two site managers with a single-use, expiring token.

Rules: a token is shown once (only its SHA-256 is stored), works once, and expires after
``TOKEN_LIFETIME``. Pairing is symmetric: the site that presents a token learns the peer
from its answer, and the peer learns the presenter from the request. A failed pairing
changes nothing on either side.

Pairing pins certificates: each side sends its TLS certificate (``seawall.tls``) and the
address of its peer API, and keeps the other's. From then on the managers call each other
only on their peer APIs, over mutual TLS with those pins (``peer_tls``, the listener's
context, follows the pins of the database), and a call is taken as coming from the site
whose pinned certificate it presented (``peer_site_id``); agents take replication only
from, and send it only to, the holder of the certificate pinned for that peer.

The handshake runs on the peer's API, over HTTPS: a token is ``swpt_SECRET.PIN``, PIN being
the SHA-256 (base64url) of the certificate the API that made it serves (as join tokens,
``seawall.join_tokens``). The presenting manager connects only to a server presenting that
certificate (``seawall.api_tls.certificate_of``, then pinned for the call), so the token
never crosses to anyone else, and the answer's certificate comes from the site the
operator's token came from. The token vouches for the presenter's certificate. A site in
``--insecure-http`` (loopback only) makes tokens without a PIN, presented over plain HTTP
to a loopback address only.
"""

from __future__ import annotations

import secrets
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from seawall.api_tls import ApiTls, address_of, certificate_of, pinned_context
from seawall.config import SiteConfig, is_loopback
from seawall.errors import Conflict, InvalidInput, NotFound, PeerError, Unauthorized
from seawall.http import JsonClient
from seawall.join_tokens import certificate_pin, pin_fingerprint
from seawall.manager.access.hashing import token_hash
from seawall.manager.models import PairingToken, Peer, utc
from seawall.tls import PinnedServerContext, check_certificate, der_fingerprint, fingerprint

TOKEN_LIFETIME = timedelta(hours=1)
PREFIX = "swpt_"


def token_pin(token: str) -> str | None:
    """The PIN a pairing token carries (None: none); ``Unauthorized`` if it is malformed."""
    secret, dot, pin = token.removeprefix(PREFIX).partition(".")
    if not token.startswith(PREFIX) or len(secret) < 32 or (dot and len(pin) != 43):
        raise Unauthorized("pairing token is invalid (expected swpt_…, as `seawall site "
                           "token` prints it at the other site)")
    return pin or None


class SiteService:
    def __init__(self, config: SiteConfig, sessions: sessionmaker[Session],
                 api_tls: ApiTls | None = None) -> None:
        """``api_tls``: what the API serves (its certificate's PIN goes into tokens)."""
        self.config = config
        self.sessions = sessions
        self.api_tls = api_tls
        self.cert_pem = config.identity().cert_pem
        self.peer_tls = PinnedServerContext(config.identity(), self._pinned_certs())

    def info(self) -> dict[str, Any]:
        replication_host, replication_port = self.config.advertised_replication
        return {
            "site_id": self.config.site_id,
            "name": self.config.name,
            "api_url": self.config.api_url,
            "replication_host": replication_host,
            "replication_port": replication_port,
            "cert_pem": self.cert_pem,
            "peer_api_url": self.config.peer_api_url,
        }

    def new_token(self) -> str:
        pin = "" if self.api_tls is None else "." + certificate_pin(self.api_tls.cert_pem)
        token = f"{PREFIX}{secrets.token_urlsafe(24)}{pin}"
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            session.add(PairingToken(token_hash=token_hash(token), created_at=now,
                                     expires_at=now + TOKEN_LIFETIME))
        return token

    def accept(self, token: str, peer: dict[str, Any]) -> dict[str, Any]:
        """A peer presents our token: check it, remember the peer, burn the token."""
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            row = session.get(PairingToken, token_hash(token))
            if row is None or row.used_at is not None or utc(row.expires_at) < now:
                raise Unauthorized("pairing token is invalid, expired or already used")
            if peer["site_id"] == self.config.site_id:
                raise InvalidInput("a site cannot pair with itself")
            check_certificate(peer["cert_pem"])
            # Burnt only if still unused, in one statement: of two pairings racing with one
            # token, the second finds it used once the first commits.
            burnt = session.execute(
                update(PairingToken)
                .where(PairingToken.token_hash == row.token_hash,
                       PairingToken.used_at.is_(None))
                .values(used_at=now))
            if getattr(burnt, "rowcount", 0) != 1:
                raise Unauthorized("pairing token is invalid, expired or already used")
            self._store_peer(session, peer, now)
        self.refresh_pins()
        return self.info()

    def pair(self, peer_url: str, token: str) -> dict[str, Any]:
        """Present ``token`` to the manager at ``peer_url`` and remember it on success."""
        client = JsonClient(peer_url.rstrip("/"), what=f"the site at {peer_url}",
                            tls=self._peer_api_trust(peer_url, token_pin(token)))
        try:
            peer = client.post("/api/v1/pairing/accept", {"token": token, "site": self.info()})
        finally:
            client.close()
        try:
            check_certificate(str(peer.get("cert_pem", "")))
        except InvalidInput as exc:
            raise PeerError(f"the peer's answer has no valid certificate: {exc}") from None
        peer_api_url = peer.get("peer_api_url")
        if peer_api_url is not None and not (isinstance(peer_api_url, str) and len(
                peer_api_url) <= 256 and peer_api_url.startswith("https://")):
            raise PeerError(f"the peer's answer has no valid peer API URL: {peer_api_url!r}")
        with self.sessions.begin() as session:
            self._store_peer(session, peer, datetime.now(UTC))
        self.refresh_pins()
        return dict(peer)

    @staticmethod
    def _peer_api_trust(peer_url: str, pin: str | None) -> ssl.SSLContext | None:
        """How to reach the API of the site that made the token: its pinned certificate."""
        scheme = peer_url.partition("://")[0]
        if scheme == "https" and pin is not None:
            return pinned_context(certificate_of(peer_url, pin_fingerprint(pin)))
        if scheme == "https":
            raise InvalidInput("this pairing token names no certificate (a site in plain "
                               "HTTP made it): pair with https://… using a token its site "
                               "made then")
        if scheme == "http" and is_loopback(address_of(peer_url)[0]):
            return None
        raise InvalidInput(f"pair with the other site's https:// URL, not {peer_url!r} "
                           "(plain http:// only to a loopback address)")

    def _store_peer(self, session: Session, peer: dict[str, Any], now: datetime) -> None:
        existing = session.get(Peer, peer["site_id"])
        clash = session.scalar(select(Peer).where(Peer.name == peer["name"]))
        if clash is not None and clash.site_id != peer["site_id"]:
            raise Conflict(f"another peer is already named {peer['name']!r}")
        if existing is None:
            existing = Peer(site_id=peer["site_id"], paired_at=now)
            session.add(existing)
        existing.name = peer["name"]
        existing.api_url = peer["api_url"]
        existing.replication_host = peer["replication_host"]
        existing.replication_port = int(peer["replication_port"])
        existing.cert_pem = peer["cert_pem"]
        existing.peer_api_url = peer.get("peer_api_url")  # absent from older peers

    def _pinned_certs(self) -> list[str]:
        with self.sessions() as session:
            return [pem for pem in session.scalars(select(Peer.cert_pem)) if pem is not None]

    def refresh_pins(self) -> None:
        """Make the peer API's listener pin exactly the certificates of the paired sites."""
        self.peer_tls.replace(self._pinned_certs())

    def peer_site_id(self, cert_der: bytes | None) -> str | None:
        """The paired site whose pinned certificate is ``cert_der`` (a TLS client's), if any."""
        if cert_der is None:
            return None
        presented = der_fingerprint(cert_der)
        with self.sessions() as session:
            for site_id, cert_pem in session.execute(select(Peer.site_id, Peer.cert_pem)):
                if cert_pem is not None and fingerprint(cert_pem) == presented:
                    return str(site_id)
        return None

    def peers(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [
                {"site_id": p.site_id, "name": p.name, "api_url": p.api_url,
                 "peer_api_url": p.peer_api_url,
                 "replication": f"{p.replication_host}:{p.replication_port}",
                 "paired_at": utc(p.paired_at).isoformat(),
                 "fingerprint": fingerprint(p.cert_pem) if p.cert_pem else None}
                for p in session.scalars(select(Peer).order_by(Peer.name))
            ]

    def peer_by_name(self, session: Session, name: str) -> Peer:
        peer = session.scalar(select(Peer).where(Peer.name == name))
        if peer is None:
            raise NotFound(f"no paired site named {name!r} (see `seawall peer list`)")
        return peer

    @staticmethod
    def pinned_cert(peer: Peer) -> str:
        """The certificate pinned for ``peer``, which its agent must present."""
        if peer.cert_pem is None:
            raise Conflict(f"site {peer.name} was paired before sites exchanged certificates: "
                           "pair again (`seawall site token` there, `seawall pair` here)")
        return peer.cert_pem
