"""Local users and their API tokens: creation, login, authentication, revocation.

Rules:
- A request is made by the owner of a valid API token: known, not revoked, not expired,
  and of a user that still exists. Anything else authenticates no one (the caller answers
  401), with no hint of which it was.
- Tokens are shown once, when made (``hashing``: only their SHA-256 is kept); login with
  a password makes a token too, expiring after ``LOGIN_TOKEN_LIFETIME`` by default.
- A site always keeps an admin: the last admin can be neither deleted nor demoted.
  ``site init`` makes the first one, ``admin`` with a token and no password; whoever holds
  the data directory can get an admin token back (``admin_token``), which makes or
  restores ``admin``.
- Deleting a user deletes their tokens; a user sees and revokes their own tokens, an
  admin anyone's (through the ``/users/{name}/tokens`` routes).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from seawall.errors import Conflict, InvalidInput, NotFound, Unauthorized
from seawall.manager.access import hashing
from seawall.manager.access.policy import Role
from seawall.manager.models import ApiToken, ConsoleSession, User, utc

ADMIN_NAME = "admin"
LOGIN_TOKEN_LIFETIME_S = 30 * 86400.0
TOKEN_LIFETIME_MAX_S = 3650 * 86400.0
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user, through one of their tokens."""

    user_id: str
    name: str
    role: Role
    token_id: str


def _token_row(token: ApiToken, now: datetime) -> dict[str, Any]:
    expires_at = utc(token.expires_at) if token.expires_at else None
    state = ("revoked" if token.revoked_at else
             "expired" if expires_at is not None and expires_at <= now else "valid")
    return {"id": token.token_id, "name": token.name,
            "created_at": utc(token.created_at).isoformat(),
            "expires_at": expires_at.isoformat() if expires_at else None, "state": state}


class AccessService:
    def __init__(self, sessions: sessionmaker[Session],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.sessions = sessions
        self.clock = clock

    # --- authentication ----------------------------------------------------------------

    def authenticate(self, token: str) -> Principal | None:
        """The owner of ``token`` if it is valid now, else None."""
        with self.sessions() as session:
            row = session.execute(
                select(ApiToken, User).join(User, User.user_id == ApiToken.user_id)
                .where(ApiToken.token_hash == hashing.token_hash(token))).first()
            if row is None:
                return None
            api_token, user = row
            if api_token.revoked_at is not None:
                return None
            if api_token.expires_at is not None and utc(api_token.expires_at) <= self.clock():
                return None
            return Principal(user.user_id, user.name, Role.parse(user.role), api_token.token_id)

    def login(self, name: str, password: str, expires_s: float | None,
              token_name: str) -> dict[str, Any]:
        """A new token for ``name`` if ``password`` is theirs (401 otherwise, same message)."""
        lifetime_s = LOGIN_TOKEN_LIFETIME_S if expires_s is None else expires_s
        with self.sessions.begin() as session:
            user = session.scalar(select(User).where(User.name == name))
            if not hashing.verify_password(user.password_hash if user else None, password):
                raise Unauthorized("wrong user name or password")
            assert user is not None and user.password_hash is not None
            if hashing.needs_rehash(user.password_hash):
                user.password_hash = hashing.hash_password(password)
            return self._new_token(session, user, token_name, lifetime_s)

    # --- users -------------------------------------------------------------------------

    def create_first_admin(self) -> str | None:
        """At ``site init``: the user ``admin`` and its first token; None if users exist
        (a database kept from before)."""
        with self.sessions.begin() as session:
            if session.scalar(select(func.count()).select_from(User)):
                return None
            user = self._add_user(session, ADMIN_NAME, Role.ADMIN, None)
            return str(self._new_token(session, user, "site-init", None)["token"])

    def admin_token(self, token_name: str) -> str:
        """For whoever holds the data directory: a new token of ``admin``, made an admin."""
        with self.sessions.begin() as session:
            user = session.scalar(select(User).where(User.name == ADMIN_NAME))
            if user is None:
                user = self._add_user(session, ADMIN_NAME, Role.ADMIN, None)
            user.role = Role.ADMIN.label
            return str(self._new_token(session, user, token_name, None)["token"])

    def create_user(self, name: str, role: str, password: str | None) -> dict[str, Any]:
        """A new user; one without a password gets a first token instead (shown once)."""
        parsed = Role.parse(role)
        if password is not None:
            hashing.check_password_rules(password)
        with self.sessions.begin() as session:
            if session.scalar(select(User).where(User.name == name)) is not None:
                raise Conflict(f"user {name!r} already exists")
            user = self._add_user(session, name, parsed, password)
            result = self._describe(user)
            if password is None:
                result["token"] = self._new_token(session, user, "first", None)["token"]
            return result

    def list_users(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            return [self._describe(user)
                    for user in session.scalars(select(User).order_by(User.name))]

    def delete_user(self, name: str) -> None:
        with self.sessions.begin() as session:
            user = self._user(session, name)
            self._keep_an_admin(session, user, None)
            tokens = select(ApiToken.token_id).where(ApiToken.user_id == user.user_id)
            session.execute(delete(ConsoleSession).where(ConsoleSession.token_id.in_(tokens)))
            session.execute(delete(ApiToken).where(ApiToken.user_id == user.user_id))
            session.delete(user)

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        parsed = Role.parse(role)
        with self.sessions.begin() as session:
            user = self._user(session, name)
            self._keep_an_admin(session, user, parsed)
            user.role = parsed.label
            return self._describe(user)

    def set_password(self, name: str, password: str) -> None:
        hashing.check_password_rules(password)
        with self.sessions.begin() as session:
            self._user(session, name).password_hash = hashing.hash_password(password)

    # --- tokens ------------------------------------------------------------------------

    def create_token(self, user_name: str, token_name: str,
                     expires_s: float | None) -> dict[str, Any]:
        with self.sessions.begin() as session:
            return self._new_token(session, self._user(session, user_name), token_name,
                                   expires_s)

    def list_tokens(self, user_name: str) -> list[dict[str, Any]]:
        now = self.clock()
        with self.sessions() as session:
            user = self._user(session, user_name)
            tokens = session.scalars(select(ApiToken).where(ApiToken.user_id == user.user_id)
                                     .order_by(ApiToken.created_at))
            return [_token_row(token, now) for token in tokens]

    def revoke_token(self, user_name: str, token_id: str) -> dict[str, Any]:
        with self.sessions.begin() as session:
            user = self._user(session, user_name)
            token = session.get(ApiToken, token_id)
            if token is None or token.user_id != user.user_id:
                raise NotFound(f"user {user_name} has no token {token_id!r}")
            if token.revoked_at is None:
                token.revoked_at = self.clock()
            return _token_row(token, self.clock())

    # --- inside a transaction ------------------------------------------------------------

    def _add_user(self, session: Session, name: str, role: Role,
                  password: str | None) -> User:
        user = User(user_id=str(uuid.uuid4()), name=name, role=role.label,
                    password_hash=hashing.hash_password(password) if password else None,
                    created_at=self.clock())
        session.add(user)
        session.flush()  # its tokens reference it; with no relationship() nothing orders them
        return user

    def _new_token(self, session: Session, user: User, token_name: str,
                   expires_s: float | None) -> dict[str, Any]:
        if expires_s is not None and not 0 < expires_s <= TOKEN_LIFETIME_MAX_S:
            raise InvalidInput("a token's lifetime must be more than 0 and at most 3650d")
        token, now = hashing.new_token(), self.clock()
        row = ApiToken(token_id=hashing.new_token_id(), token_hash=hashing.token_hash(token),
                       user_id=user.user_id, name=token_name, created_at=now,
                       expires_at=None if expires_s is None else now + timedelta(
                           seconds=expires_s))
        session.add(row)
        return {**_token_row(row, now), "token": token, "user": user.name, "role": user.role}

    @staticmethod
    def _user(session: Session, name: str) -> User:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user named {name!r}")
        return user

    @staticmethod
    def _keep_an_admin(session: Session, user: User, new_role: Role | None) -> None:
        """Refuse to delete (``new_role`` None) or demote the last admin."""
        if user.role != Role.ADMIN.label or new_role is Role.ADMIN:
            return
        admins = session.scalar(select(func.count()).select_from(User)
                                .where(User.role == Role.ADMIN.label))
        if admins == 1:
            raise Conflict(f"{user.name} is the last admin: make another admin first")

    @staticmethod
    def _describe(user: User) -> dict[str, Any]:
        return {"name": user.name, "role": user.role,
                "password": user.password_hash is not None,
                "created_at": utc(user.created_at).isoformat()}
