"""ConsoleSessions: the console's signed-in sessions, kept in the site's database.

Rules:
- A session is opened after a password login through the API's own ``LoginGate`` (same
  check, throttle and lockout), which makes an API token named ``console`` that lives
  ``policy.absolute_s``; the session acts as that token's owner, so revoking the token
  (``seawall token revoke``), or deleting the user, ends the session, and a role change
  applies at the next request.
- ``resolve`` answers who a cookie's session is, or None: unknown (another site's, made
  up), expired (``SessionPolicy``: it is then deleted), or its token no longer valid.
  ``touch`` moves its idle deadline (pages do; the dashboard's polling does not, so an
  unattended screen still times out).
- Rows are bounded: each ``open`` deletes the sessions past their absolute limit.
- ``close`` (logout) deletes the session and revokes its token: the old cookie is worth
  nothing afterwards, here or through the API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from seawall.manager.access.policy import Decision, Role, decide
from seawall.manager.access.service import Principal
from seawall.manager.console.policy import SessionPolicy, new_secret, session_hash
from seawall.manager.models import ApiToken, ConsoleSession, User, utc


@dataclass(frozen=True)
class ConsoleUser:
    """Who a console request comes from, and its session's CSRF token."""

    principal: Principal
    csrf_token: str

    def may(self, method: str, api_path: str) -> bool:
        """Whether this user may call the API route (the API's own policy table): the
        console shows and runs an operation only for a user the API would let run it."""
        return decide(method, api_path, self.principal.role) is Decision.ALLOW


class ConsoleSessions:
    def __init__(self, sessions: sessionmaker[Session], policy: SessionPolicy | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.sessions = sessions
        self.policy = policy or SessionPolicy()
        self.clock = clock

    def open(self, token_id: str) -> tuple[str, str]:
        """A new session acting through API token ``token_id``: (session id, CSRF token)."""
        session_id, csrf_token, now = new_secret(), new_secret(), self.clock()
        cutoff = now - timedelta(seconds=self.policy.absolute_s)
        with self.sessions.begin() as session:  # and forget the sessions over by now
            session.execute(delete(ConsoleSession).where(ConsoleSession.created_at < cutoff))
            session.add(ConsoleSession(session_hash=session_hash(session_id), token_id=token_id,
                                       csrf_token=csrf_token, created_at=now, last_seen_at=now))
        return session_id, csrf_token

    def resolve(self, session_id: str | None, touch: bool) -> ConsoleUser | None:
        if not session_id:
            return None
        now, key = self.clock(), session_hash(session_id)
        with self.sessions.begin() as session:
            row = session.execute(
                select(ConsoleSession, ApiToken, User)
                .join(ApiToken, ApiToken.token_id == ConsoleSession.token_id)
                .join(User, User.user_id == ApiToken.user_id)
                .where(ConsoleSession.session_hash == key)).first()
            if row is None:
                return None
            console, token, user = row
            token_over = token.revoked_at is not None or (
                token.expires_at is not None and utc(token.expires_at) <= now)
            if token_over or self.policy.expiry(utc(console.created_at),
                                                utc(console.last_seen_at), now):
                session.delete(console)
                return None
            if touch:
                console.last_seen_at = now
            principal = Principal(user.user_id, user.name, Role.parse(user.role), token.token_id)
            return ConsoleUser(principal, console.csrf_token)

    def close(self, session_id: str) -> None:
        """Log out: delete the session and revoke its token (no-op for an unknown id)."""
        now = self.clock()
        with self.sessions.begin() as session:
            console = session.get(ConsoleSession, session_hash(session_id))
            if console is None:
                return
            token = session.get(ApiToken, console.token_id)
            if token is not None and token.revoked_at is None:
                token.revoked_at = now
            session.delete(console)
