"""Join tokens: what lets an agent on another host join the site, once (pure; shared by
the manager, which makes and checks them, and the joining agent, which checks the PIN).

Rules:
- A token is ``swjt_SECRET.PIN``: SECRET is random (24 bytes), PIN is the SHA-256 (DER,
  base64url) of the certificate the manager's API serves (its identity, or the operator's
  ``--tls-cert``; the identity for an ``--insecure-http`` manager). The manager keeps only
  the SHA-256 of the whole token; the token is shown once.
- The PIN lets the joining agent make sure it talks to the manager the operator's token
  came from: the join's HTTPS connection takes only that certificate
  (``seawall.agent.joining``).
- A token is usable until it expires (``ttl_s`` from its making, at most ``MAX_TTL_S``)
  and until it is used; an unknown, expired or used token gets one and the same answer.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from seawall.errors import InvalidInput, Unauthorized

PREFIX = "swjt_"
DEFAULT_TTL_S = 3600.0
MAX_TTL_S = 7 * 86400.0
TOKEN_MAX_CHARS = 128


def certificate_pin(cert_pem: str) -> str:
    """The PIN of ``cert_pem``: base64url (no padding) of the SHA-256 of its DER form."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(
        serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def pin_fingerprint(pin: str) -> str:
    """The SHA-256 fingerprint (``AB:CD:…``, as ``seawall.tls.fingerprint``) a PIN names."""
    digest = base64.urlsafe_b64decode(pin + "=")
    return ":".join(f"{byte:02X}" for byte in digest)


def new_token(manager_cert_pem: str) -> str:
    return f"{PREFIX}{secrets.token_urlsafe(24)}.{certificate_pin(manager_cert_pem)}"


def token_pin(token: str) -> str:
    """The manager's PIN a token carries; ``InvalidInput`` if it is no join token."""
    secret, dot, pin = token.removeprefix(PREFIX).partition(".")
    if not token.startswith(PREFIX) or not dot or len(secret) < 32 or len(pin) != 43:
        raise InvalidInput("not a join token (expected swjt_…, as `seawall agent token` "
                           "prints it)")
    return pin


def check_ttl_s(ttl_s: float) -> timedelta:
    if not 0 < ttl_s <= MAX_TTL_S:
        raise InvalidInput(f"a join token lives more than 0 s and at most {MAX_TTL_S:.0f} s "
                           f"(7d), not {ttl_s:g} s")
    return timedelta(seconds=ttl_s)


def refused() -> Unauthorized:
    """The one answer to a token that cannot be used, whatever the reason."""
    return Unauthorized("join token is invalid, expired or already used: make a new one "
                        "(`seawall agent token` at the site manager)")


def check_usable(expires_at: datetime | None, used_at: datetime | None,
                 now: datetime) -> None:
    """Refuse a token that is unknown (``expires_at`` None), expired or used already."""
    if expires_at is None or used_at is not None or expires_at <= now:
        raise refused()
