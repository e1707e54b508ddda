"""The access table itself: what each role may do, independent of how it is enforced."""

from __future__ import annotations

import pytest

from seawall.errors import InvalidInput
from seawall.manager.access.policy import (
    POLICY,
    Access,
    Decision,
    Role,
    access_for,
    check_policy,
    decide,
    served,
)

ADMIN_ONLY = [
    ("DELETE", "/api/v1/peers/{name}"),
    ("POST", "/api/v1/users"), ("DELETE", "/api/v1/users/{name}"),
    ("PUT", "/api/v1/users/{name}/role"), ("PUT", "/api/v1/users/{name}/password"),
    ("GET", "/api/v1/users"), ("GET", "/api/v1/users/{name}/tokens"),
    ("DELETE", "/api/v1/users/{name}/tokens/{token_id}"),
    ("POST", "/api/v1/pairing/token"), ("POST", "/api/v1/pairing"),
    ("POST", "/api/v1/volumes"), ("POST", "/api/v1/volumes/add"), ("POST", "/api/v1/groups"),
    # a group's settings name the scripts its recovery site runs and where it keeps data
    ("PATCH", "/api/v1/groups/{name}/settings"),
]
OPERATIONS = [
    ("POST", "/api/v1/groups/{name}/checkpoints"), ("POST", "/api/v1/groups/{name}/resync"),
    ("POST", "/api/v1/exports"), ("POST", "/api/v1/exports/stop"),
    ("POST", "/api/v1/failover/{group}/test"), ("POST", "/api/v1/failover/{group}/stop"),
    ("POST", "/api/v1/clones"),
]


def test_a_viewer_only_reads() -> None:
    for (method, path), access in POLICY.items():
        if access is Access.VIEWER:
            assert method == "GET" or path.startswith("/api/v1/tokens"), (method, path)


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
def test_configuration_and_users_are_for_admins(method: str, path: str) -> None:
    assert decide(method, path, Role.ADMIN) is Decision.ALLOW
    assert decide(method, path, Role.OPERATOR) is Decision.FORBIDDEN
    assert decide(method, path, Role.VIEWER) is Decision.FORBIDDEN
    assert decide(method, path, None) is Decision.UNAUTHENTICATED


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operations_are_for_operators_and_admins(method: str, path: str) -> None:
    assert decide(method, path, Role.OPERATOR) is Decision.ALLOW
    assert decide(method, path, Role.ADMIN) is Decision.ALLOW
    assert decide(method, path, Role.VIEWER) is Decision.FORBIDDEN


def test_what_needs_no_user_token() -> None:
    assert decide("GET", "/health", None) is Decision.ALLOW
    assert decide("HEAD", "/health", None) is Decision.ALLOW
    assert decide("POST", "/api/v1/login", None) is Decision.ALLOW
    assert decide("POST", "/api/v1/peer/groups", None) is Decision.ALLOW
    assert decide("GET", "/api/v1/groups", None) is Decision.UNAUTHENTICATED


def test_each_listener_serves_its_own_routes() -> None:
    assert served("POST", "/api/v1/peer/groups", peer_listener=True)
    assert not served("POST", "/api/v1/peer/groups", peer_listener=False)
    assert served("GET", "/health", peer_listener=True)
    for method, path in (("GET", "/api/v1/groups"), ("POST", "/api/v1/pairing/accept"),
                         ("GET", "/docs"), ("GET", "/api/v1/secret")):
        assert not served(method, path, peer_listener=True)
        assert served(method, path, peer_listener=False)


def test_an_unlisted_route_or_method_is_refused_even_to_admins() -> None:
    assert access_for("GET", "/api/v1/secret") is None
    assert decide("GET", "/api/v1/secret", Role.ADMIN) is Decision.FORBIDDEN
    assert decide("DELETE", "/health", Role.ADMIN) is Decision.FORBIDDEN
    assert decide("POST", "/api/v1/groups/{name}", Role.ADMIN) is Decision.FORBIDDEN


def test_a_table_opening_a_user_route_is_refused() -> None:
    check_policy(POLICY)
    with pytest.raises(ValueError, match="peer access only under /api/v1/peer/"):
        check_policy({**POLICY, ("POST", "/api/v1/groups"): Access.PEER})
    with pytest.raises(ValueError, match="only reads may be open"):
        check_policy({**POLICY, ("POST", "/api/v1/users"): Access.OPEN})


def test_roles_parse_and_nest() -> None:
    assert Role.parse("Operator") is Role.OPERATOR
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    with pytest.raises(InvalidInput, match="admin, operator or viewer"):
        Role.parse("root")
