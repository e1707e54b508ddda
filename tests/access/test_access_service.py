"""Users, passwords and tokens in a real database (SQLite, and PostgreSQL when installed)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from seawall.errors import Conflict, InvalidInput, NotFound, Unauthorized
from seawall.manager.access import hashing
from seawall.manager.access.policy import Role
from seawall.manager.access.service import AccessService
from seawall.manager.models import ApiToken, User, create_database

PASSWORD = "correct horse battery"


@pytest.fixture
def access(database_url: str) -> Iterator[AccessService]:
    engine, sessions = create_database(database_url)
    try:
        yield AccessService(sessions)
    finally:
        engine.dispose()


def test_passwords_are_argon2id_hashes(access: AccessService) -> None:
    access.create_user("alice", "operator", PASSWORD)
    with access.sessions() as session:
        stored = session.scalar(select(User.password_hash).where(User.name == "alice"))
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored
    assert hashing.verify_password(stored, PASSWORD)
    assert not hashing.verify_password(stored, PASSWORD + "!")
    assert hashing.hash_password(PASSWORD) != stored  # salted
    assert not hashing.verify_password(None, PASSWORD)
    assert not hashing.verify_password("not a hash", PASSWORD)


def test_login_makes_a_token_and_says_nothing_about_which_part_was_wrong(
        access: AccessService) -> None:
    access.create_user("alice", "operator", PASSWORD)
    access.create_user("bot", "viewer", None)
    made = access.login("alice", PASSWORD, None, "login")
    principal = access.authenticate(made["token"])
    assert principal is not None and (principal.name, principal.role) == ("alice",
                                                                          Role.OPERATOR)
    lifetime = (datetime.fromisoformat(made["expires_at"])
                - datetime.fromisoformat(made["created_at"]))
    assert lifetime == timedelta(days=30)
    messages = set()
    for name, password in (("alice", "wrong password"), ("nobody", PASSWORD),
                           ("bot", PASSWORD)):
        with pytest.raises(Unauthorized) as refused:
            access.login(name, password, None, "login")
        messages.add(refused.value.message)
    assert messages == {"wrong user name or password"}


def test_tokens_are_stored_as_sha256_only(access: AccessService) -> None:
    token = access.create_first_admin()
    assert token is not None and token.startswith("swat_") and len(token) > 40
    made = access.create_token("admin", "ci", 3600.0)
    with access.sessions() as session:
        rows = session.execute(text("SELECT * FROM api_tokens")).all()
    dumped = repr(rows)
    assert token not in dumped and made["token"] not in dumped
    assert hashlib.sha256(token.encode()).hexdigest() in dumped
    assert access.create_first_admin() is None  # once only


def test_expired_revoked_and_orphaned_tokens_authenticate_no_one(
        access: AccessService) -> None:
    access.create_user("bob", "viewer", None)
    short = access.create_token("bob", "short", 60.0)
    assert access.authenticate(short["token"]) is not None
    later = AccessService(access.sessions, clock=lambda: datetime.now(UTC) + timedelta(
        seconds=61))
    assert later.authenticate(short["token"]) is None
    assert [t["state"] for t in later.list_tokens("bob") if t["id"] == short["id"]] == [
        "expired"]
    kept = access.create_token("bob", "kept", None)
    access.revoke_token("bob", kept["id"])
    assert access.authenticate(kept["token"]) is None
    with pytest.raises(NotFound):
        access.revoke_token("admin-less", kept["id"])
    other = access.create_token("bob", "other", None)
    access.create_user("carol", "admin", None)
    with pytest.raises(NotFound, match="carol has no token"):
        access.revoke_token("carol", other["id"])  # not hers
    access.delete_user("bob")
    assert access.authenticate(other["token"]) is None
    with access.sessions() as session:
        assert session.scalars(select(ApiToken.name)).all() == ["first"]  # carol's
    assert access.authenticate("swat_" + "x" * 43) is None
    with pytest.raises(InvalidInput, match="lifetime"):
        access.create_token("carol", "forever", 1e12)


def test_the_last_admin_stays(access: AccessService) -> None:
    access.create_first_admin()
    with pytest.raises(Conflict, match="last admin"):
        access.delete_user("admin")
    with pytest.raises(Conflict, match="last admin"):
        access.set_role("admin", "operator")
    access.create_user("root2", "admin", None)
    access.set_role("admin", "viewer")
    assert {u["name"]: u["role"] for u in access.list_users()} == {"admin": "viewer",
                                                                  "root2": "admin"}
    token = access.admin_token("break-glass")  # whoever holds the data directory
    principal = access.authenticate(token)
    assert principal is not None and principal.role is Role.ADMIN
    access.delete_user("root2")
    with pytest.raises(Conflict, match="last admin"):  # admin is the only one again
        access.delete_user("admin")


def test_bad_input_changes_nothing(access: AccessService) -> None:
    with pytest.raises(InvalidInput, match="8 to"):
        access.create_user("dave", "viewer", "short")
    with pytest.raises(InvalidInput, match="role must be"):
        access.create_user("dave", "superuser", None)
    assert access.list_users() == []
    access.create_user("dave", "viewer", None)
    with pytest.raises(Conflict, match="already exists"):
        access.create_user("dave", "admin", None)
    with pytest.raises(InvalidInput):
        access.set_password("dave", "x")
    with pytest.raises(NotFound):
        access.set_role("erin", "viewer")
    assert [(u["name"], u["role"], u["password"]) for u in access.list_users()] == [
        ("dave", "viewer", False)]
