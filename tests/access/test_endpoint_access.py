"""Every endpoint of a real manager against every role and every kind of bad credential.

The routes come from the app itself (so a new route is covered without touching this
file), are served by uvicorn on a real socket, and are called over HTTP. The manager has
no agent: a request the guard lets through fails further on (404, 422, 502...), which is
fine, since only the guard answers 401 and 403 here. Bodies are ``{}``: a refused
request must be refused before its body is even validated.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastapi.routing
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from seawall.api_tls import ApiTls, leaf_pem, pinned_context
from seawall.config import SiteConfig
from seawall.localsites import free_port
from seawall.manager.access.policy import POLICY, Access, Role, access_for
from seawall.manager.access.service import AccessService
from seawall.manager.app import create_app
from seawall.manager.models import create_database
from seawall.serving import Server

START_TIMEOUT_S = 20.0
ROLES = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
BAD_CREDENTIALS = ("none", "wrong", "expired", "revoked", "deleted-user", "not-bearer")


def api_tls(config: SiteConfig) -> Callable[..., ssl.SSLContext]:
    """uvicorn's ``ssl_context_factory`` serving the API's certificate, as the manager does."""
    return lambda _config, _default: ApiTls(*config.api_tls_files()).context


def trust(config: SiteConfig) -> ssl.SSLContext:
    return pinned_context(leaf_pem(config.api_tls_files()[0]))


def endpoints(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, HEAD counted as GET."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(contexts(app.routes)) if contexts else list(app.routes)
    found = set()
    for route in routes:
        for method in getattr(route, "methods", None) or ():
            found.add(("GET" if method == "HEAD" else method, str(getattr(route, "path", ""))))
    return sorted(found)


@dataclass
class Manager:
    app: FastAPI
    config: SiteConfig
    url: str
    tokens: dict[str, str]  # role label or bad-credential kind -> token
    access: AccessService
    client: httpx.Client


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manager]:
    directory = tmp_path_factory.mktemp("site")
    config = SiteConfig.create("prod", directory / "prod", f"127.0.0.1:{free_port()}",
                               f"127.0.0.1:{free_port()}")
    engine, sessions = create_database(config.database_url)
    access = AccessService(sessions)
    tokens = {"admin": str(access.create_first_admin())}
    for role in (Role.VIEWER, Role.OPERATOR):
        tokens[role.label] = access.create_user(f"user-{role.label}", role.label, None)["token"]
    access.create_user("gone", "admin", None)
    tokens["deleted-user"] = access.create_token("gone", "t", None)["token"]
    access.delete_user("gone")
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    tokens["expired"] = AccessService(sessions, clock=lambda: an_hour_ago).create_token(
        "user-operator", "old", 60.0)["token"]
    revoked = access.create_token("admin", "to-revoke", None)
    access.revoke_token("admin", revoked["id"])
    tokens["revoked"] = revoked["token"]
    tokens["wrong"] = "swat_" + "A" * 43
    app = create_app(config)
    server = Server(uvicorn.Config(app, host="127.0.0.1", port=config.api_port,
                                   log_level="warning", ssl_context_factory=api_tls(config)),
                    handle_signals=False)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert time.monotonic() < deadline, "manager did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=config.api_url, timeout=30.0, verify=trust(config)) as client:
            yield Manager(app, config, config.api_url, tokens, access, client)
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


def call(manager: Manager, method: str, template: str, credential: str,
         body: object = None) -> httpx.Response:
    path = template.replace("{", "x-").replace("}", "")  # any value: nothing exists
    headers = {}
    if credential == "not-bearer":
        headers["Authorization"] = f"Basic {manager.tokens['admin']}"
    elif credential != "none":
        headers["Authorization"] = f"Bearer {manager.tokens[credential]}"
    send_body = method in ("POST", "PUT", "PATCH")
    return manager.client.request(
        method, path, headers=headers,
        json=(body if body is not None else {}) if send_body else None)


def test_every_route_has_an_entry_and_every_entry_a_route(manager: Manager) -> None:
    served = endpoints(manager.app)
    missing = [f"{method} {path}" for method, path in served if access_for(method, path) is None]
    assert not missing, f"routes with no entry in access.policy.POLICY: {missing}"
    stale = sorted(f"{m} {p}" for m, p in POLICY if (m, p) not in set(served))
    assert not stale, f"entries of access.policy.POLICY with no route: {stale}"


def test_no_user_route_is_open(manager: Manager) -> None:
    """Only health and the API's own description answer everyone; peers only under /peer/."""
    open_routes = {path for (method, path) in endpoints(manager.app)
                   if access_for(method, path) is Access.OPEN}
    assert open_routes == {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                           "/redoc"}
    for method, path in endpoints(manager.app):
        if access_for(method, path) is Access.PEER:
            assert path.startswith("/api/v1/peer/") or path == "/api/v1/pairing/accept"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.label)
def test_each_role_reaches_exactly_what_the_table_allows(manager: Manager, role: Role) -> None:
    wrong = []
    for method, path in endpoints(manager.app):
        access = access_for(method, path)
        assert access is not None
        response = call(manager, method, path, role.label)
        allowed = access.role is None or role >= access.role
        if allowed != (response.status_code not in (401, 403)) or (
                not allowed and response.status_code != 403):
            wrong.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
    assert not wrong, f"{role.label}: " + "; ".join(wrong)


@pytest.mark.parametrize("credential", BAD_CREDENTIALS)
def test_bad_credentials_reach_only_what_needs_none(manager: Manager, credential: str) -> None:
    wrong = []
    for method, path in endpoints(manager.app):
        access = access_for(method, path)
        assert access is not None
        response = call(manager, method, path, credential)
        expected_401 = access.role is not None
        if (response.status_code == 401) != expected_401 or response.status_code == 403:
            wrong.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
        if expected_401:
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["code"] == "unauthorized"
    assert not wrong, f"{credential}: " + "; ".join(wrong)


SCRIPT_FIELDS = frozenset({"pre_script", "post_script"})
HOST_PATH_FIELDS = frozenset({"storage_path", "preseed", "replica_paths", "path"})


def body_fields(app: FastAPI) -> dict[tuple[str, str], set[str]]:
    """(method, path template) -> every field name its request body may hold, nested."""
    spec = app.openapi()
    schemas = spec["components"]["schemas"]

    def names(node: object, seen: frozenset[str]) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and (schema := ref.rsplit("/", 1)[-1]) not in seen:
                found |= names(schemas[schema], seen | {schema})
            found |= set(node.get("properties", {}))
            for value in node.values():
                found |= names(value, seen)
        elif isinstance(node, list):
            for value in node:
                found |= names(value, seen)
        return found

    return {(method.upper(), path): names(operation["requestBody"], frozenset())
            for path, methods in spec["paths"].items()
            for method, operation in methods.items() if "requestBody" in operation}


def test_only_admins_name_scripts_or_where_a_site_keeps_data(manager: Manager) -> None:
    """A script runs at the recovery site, a storage location or pre-seed is written there:
    only an admin names them (or the paired site, whose recovery agent checks them)."""
    naming = {route: fields & (SCRIPT_FIELDS | HOST_PATH_FIELDS)
              for route, fields in body_fields(manager.app).items()}
    naming = {route: fields for route, fields in naming.items() if fields}
    assert ("PATCH", "/api/v1/groups/{name}/settings") in naming
    wrong = {f"{method} {path}": access_for(method, path) for (method, path) in naming
             if access_for(method, path) not in (Access.ADMIN, Access.PEER)}
    assert not wrong, f"routes naming scripts or host paths below admin: {wrong}"


def test_a_clone_goes_only_into_the_clone_directory_whoever_asks(
    manager: Manager, tmp_path: Path,
) -> None:
    """Issue 12: `clone --to /etc` wrote /etc/disk0.raw, `--to /root/x` worked for an
    operator. Now the role decides whether one may clone, never where: outside the clone
    directory is refused for every role, before the group is even looked up."""
    clone_dir = manager.config.clone_dir
    (clone_dir / "out").symlink_to(tmp_path)
    for role in ROLES:
        for to in ("/etc", "/root/x", "../x", str(tmp_path), "out", "out/x"):
            response = call(manager, "POST", "/api/v1/clones", role.label,
                            {"group": "app", "checkpoint": "latest", "to": to})
            if role is Role.VIEWER:
                assert response.status_code == 403, response.text
                continue
            assert response.status_code == 400, (role, to, response.text)
            assert f"is outside {clone_dir}:" in response.json()["message"]
        if role is not Role.VIEWER:  # inside: on to the next check (no such group here)
            inside = call(manager, "POST", "/api/v1/clones", role.label,
                          {"group": "app", "checkpoint": "latest", "to": "monday"})
            assert inside.status_code == 404 and "app" in inside.json()["message"]
    assert not Path("/etc/disk0.raw").exists() and not Path("/root/x").exists()
    assert list(tmp_path.iterdir()) == [] and sorted(os.listdir(clone_dir)) == ["out"]


def test_peer_routes_are_not_served_on_the_api(manager: Manager) -> None:
    """Paired managers call them on the peer API (mutual TLS: ``tests/e2e/test_peer_trust``)."""
    peer_routes = [(m, p) for m, p in endpoints(manager.app) if access_for(m, p) is Access.PEER]
    assert peer_routes
    for method, path in peer_routes:
        for credential in ("none", "admin"):
            response = call(manager, method, path, credential, {"source_site_id": "x"})
            assert response.status_code == 404, f"{method} {path}: {response.text}"
            assert "only on the peer API" in response.json()["message"]


def test_refused_requests_change_nothing(manager: Manager) -> None:
    before = {user["name"]: user["role"] for user in manager.access.list_users()}
    attempt = {"name": "mallory", "role": "admin", "password": "long enough"}
    for credential in ("none", "expired", "viewer", "operator"):
        assert call(manager, "POST", "/api/v1/users", credential, attempt).status_code in (
            401, 403)
        assert call(manager, "PUT", "/api/v1/users/user-viewer/role", credential,
                    {"role": "admin"}).status_code in (401, 403)
    assert {user["name"]: user["role"] for user in manager.access.list_users()} == before
    refused = call(manager, "POST", "/api/v1/users", "operator", attempt)
    assert refused.json() == {
        "code": "forbidden", "fault": "user",
        "message": "user user-operator (operator) may not POST /api/v1/users: it needs the "
                   "admin role"}


def test_allowed_calls_answer(manager: Manager) -> None:
    """Allowed means served, not just 'not refused': the same calls work end to end."""
    assert call(manager, "GET", "/api/v1/me", "viewer").json()["role"] == "viewer"
    assert call(manager, "GET", "/api/v1/site", "viewer").json()["name"] == "prod"
    names = {u["name"] for u in call(manager, "GET", "/api/v1/users", "admin").json()}
    assert {"admin", "user-viewer", "user-operator"} <= names
    assert call(manager, "GET", "/health", "none").json()["status"] == "ok"
    assert call(manager, "GET", "/openapi.json", "none").json()["paths"]


def test_a_route_without_an_entry_is_refused_to_everyone(tmp_path: Path) -> None:
    config = SiteConfig.create("x", tmp_path / "x", f"127.0.0.1:{free_port()}",
                               f"127.0.0.1:{free_port()}")
    engine, sessions = create_database(config.database_url)
    token = AccessService(sessions).create_first_admin()
    app = create_app(config)

    @app.get("/api/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {"secret": "data"}

    assert ("GET", "/api/v1/forgotten") in endpoints(app)
    assert access_for("GET", "/api/v1/forgotten") is None
    server = Server(uvicorn.Config(app, host="127.0.0.1", port=config.api_port,
                                   log_level="warning", ssl_context_factory=api_tls(config)),
                    handle_signals=False)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        for headers in ({"Authorization": f"Bearer {token}"}, {}):
            response = httpx.get(config.api_url + "/api/v1/forgotten", headers=headers,
                                 verify=trust(config))
            assert response.status_code == 403, response.text
            assert "has no access rule" in response.json()["message"]
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()

