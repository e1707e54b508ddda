"""The console's session and CSRF rules, pure (no clock, database or request: values in).

Rules:
- A session id is 32 random bytes (``secrets``), URL-safe; only its SHA-256 is stored, so
  a read of the database gives no usable cookie. Its CSRF token is 32 more random bytes,
  stored as is (it is no credential alone: a request needs the cookie too).
- A session ends ``idle_s`` after its last use or ``absolute_s`` after it began, whichever
  comes first; the absolute limit is also the lifetime of the session's API token, so
  even a forgotten session row grants nothing after it.
- A state-changing request carries the session's CSRF token (form field or header);
  ``csrf_ok`` compares in constant time and refuses an empty or missing one.
- A POST whose ``Origin`` the browser set to another origin is refused (``same_origin``),
  the login form's included: no other site can sign a browser in, as someone else.
- The cookie is named after the site (``cookie_name``): two sites on one host share
  cookies (browsers ignore ports), and one's session must not overwrite the other's.
  ``__Host-``: Secure, Path=/, no Domain, so no other host or path may set it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

IDLE_S = 30 * 60.0
ABSOLUTE_S = 12 * 3600.0
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class SessionPolicy:
    idle_s: float = IDLE_S
    absolute_s: float = ABSOLUTE_S

    def expiry(self, created_at: datetime, last_seen_at: datetime,
               now: datetime) -> str | None:
        """Why a session is over at ``now`` ("idle", "absolute"), or None if it is valid."""
        if now >= created_at + timedelta(seconds=self.absolute_s):
            return "absolute"
        if now >= last_seen_at + timedelta(seconds=self.idle_s):
            return "idle"
        return None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_ok(expected: str, given: str | None) -> bool:
    """Whether ``given`` is the session's CSRF token ``expected``."""
    if not given or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def cookie_name(site_id: str) -> str:
    return f"__Host-seawall-{site_id[:8]}"


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a request's ``Origin`` (None: not sent, as by scripts) is the ``Host`` it
    was sent to."""
    if origin is None:
        return True
    return bool(host) and urlsplit(origin).netloc == host
