"""The console over HTTPS, no browser: a real manager (uvicorn, real socket, no agent).

What a browser cannot show: the headers of every answer, the cookie's attributes, the API
left as it was under the console's mount, the event log of console logins, the login
throttle, and sessions ended by expiry, by their token's revocation and by logout.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from seawall.api_tls import pinned_context
from seawall.config import SiteConfig
from seawall.localsites import free_port
from seawall.manager.access.service import AccessService
from seawall.manager.app import create_app
from seawall.manager.console.app import install_error_pages, page_templates
from seawall.manager.models import ApiToken, ConsoleSession, create_database
from seawall.serving import Server

PASSWORD = "a console password"
START_TIMEOUT_S = 20.0


@dataclass
class Manager:
    url: str
    admin: httpx.Client  # the API, as admin
    sessions: sessionmaker[Session]
    tls: ssl.SSLContext  # trusts the manager's certificate only


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manager]:
    directory = tmp_path_factory.mktemp("site")
    config = SiteConfig.create("prod", directory / "prod", f"127.0.0.1:{free_port()}",
                               f"127.0.0.1:{free_port()}")
    engine, sessions = create_database(config.database_url)
    access = AccessService(sessions)
    admin_token = str(access.create_first_admin())
    access.create_user("alice", "operator", PASSWORD)
    app = create_app(config)
    api_tls = app.state.api_tls
    server = Server(uvicorn.Config(app, host="127.0.0.1", port=config.api_port,
                                   log_level="warning",
                                   ssl_context_factory=lambda _c, _d: api_tls.context),
                    handle_signals=False)
    tls = pinned_context(api_tls.cert_pem)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert time.monotonic() < deadline, "manager did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=config.api_url, timeout=30.0, verify=tls,
                          headers={"Authorization": f"Bearer {admin_token}"}) as admin:
            yield Manager(config.api_url, admin, sessions, tls)
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


def browser(manager: Manager) -> httpx.Client:
    return httpx.Client(base_url=manager.url, timeout=30.0, follow_redirects=False,
                        verify=manager.tls)


@contextlib.contextmanager
def signed_in(manager: Manager, user: str = "alice") -> Iterator[httpx.Client]:
    with browser(manager) as client:
        answer = client.post("/login", data={"user": user, "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        # The cookie is Secure: httpx keeps it for HTTPS only, a browser for localhost too.
        (name, value), = answer.cookies.items()
        client.cookies.clear()
        client.cookies.set(name, value)
        yield client


def csrf_of(client: httpx.Client) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/alerts").text)
    assert match
    return match.group(1)


def age_sessions(manager: Manager, **columns: Any) -> None:
    with manager.sessions.begin() as session:
        session.execute(update(ConsoleSession).values(**columns))


def test_every_answer_carries_the_security_headers(manager: Manager) -> None:
    with browser(manager) as client:
        answers = [client.get("/login"), client.get("/"), client.get("/static/console.css"),
                   client.get("/no/such/page"), client.post("/login", data={})]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
    assert [a.status_code for a in answers] == [200, 303, 200, 404, 400]
    assert "cache-control" not in answers[2].headers  # static: may be cached
    assert answers[0].headers["cache-control"] == "no-store"
    assert "Traceback" not in answers[3].text and "<h1>Not found</h1>" in answers[3].text


def test_the_api_is_served_as_before(manager: Manager) -> None:
    assert manager.admin.get("/api/v1/no-such-route").json()["code"] == "not_found"
    assert manager.admin.delete("/api/v1/groups").status_code == 405
    assert manager.admin.get("/health").json()["status"] == "ok"
    assert "content-security-policy" not in manager.admin.get("/api/v1/site").headers


def test_login_sets_a_strict_cookie_and_is_logged(manager: Manager) -> None:
    with browser(manager) as client:
        answer = client.post("/login", data={"user": "alice", "password": PASSWORD})
    assert answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    assert re.match(r"__Host-seawall-[0-9a-f]{8}=[A-Za-z0-9_-]{43};", cookie), cookie
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
    assert not any(a.startswith(("domain", "max-age", "expires")) for a in attributes)
    with browser(manager) as client:
        refused = client.post("/login", data={"user": "alice", "password": "wrong one"})
    assert refused.status_code == 401 and "wrong user name or password" in refused.text
    events = manager.admin.get("/api/v1/events", params={"limit": 2}).json()
    assert [(e["operation"], e["user"], e["status_code"], e["message"]) for e in events] == [
        ("login", "alice", 401, "wrong user name or password"), ("login", "alice", 303, "")]
    assert events[0]["error_code"] == "unauthorized"
    tokens = manager.admin.get("/api/v1/users/alice/tokens").json()
    assert {t["name"] for t in tokens} == {"console"}  # the session's own API token


def test_logins_are_throttled_as_the_apis(manager: Manager) -> None:
    with browser(manager) as client:
        codes = [client.post("/login", data={"user": "mallory", "password": "guess"})
                 for _ in range(6)]
    assert [c.status_code for c in codes] == [401] * 5 + [429]
    assert "too many failed logins" in codes[-1].text


def test_expired_sessions_send_to_login(manager: Manager) -> None:
    for columns in ({"last_seen_at": datetime.now(UTC) - timedelta(minutes=31)},
                    {"created_at": datetime.now(UTC) - timedelta(hours=12, seconds=1)}):
        with signed_in(manager) as client:
            assert client.get("/").status_code == 200
            age_sessions(manager, **columns)
            assert client.get("/").headers["location"] == "/login"
            assert client.get("/fragments/overview", headers={"HX-Request": "true"}).headers[
                "hx-redirect"] == "/login"


def test_a_revoked_token_ends_its_session_and_logout_revokes_it(manager: Manager) -> None:
    with signed_in(manager) as client:
        tokens = manager.admin.get("/api/v1/users/alice/tokens").json()
        newest = max(tokens, key=lambda t: t["created_at"])
        manager.admin.delete(f"/api/v1/users/alice/tokens/{newest['id']}").raise_for_status()
        assert client.get("/").headers["location"] == "/login"
    with signed_in(manager) as client:
        token = csrf_of(client)
        assert client.post("/logout", data={"csrf_token": token}).headers[
            "location"] == "/login"
        assert client.get("/").status_code == 303  # httpx kept the cookie: it is dead
        tokens = manager.admin.get("/api/v1/users/alice/tokens").json()
        assert max(tokens, key=lambda t: t["created_at"])["state"] == "revoked"


def test_deleting_a_user_ends_their_sessions(manager: Manager) -> None:
    manager.admin.post("/api/v1/users", json={"name": "bob", "role": "viewer",
                                              "password": PASSWORD}).raise_for_status()
    with signed_in(manager, "bob") as client:
        assert client.get("/").status_code == 200
        assert manager.admin.delete("/api/v1/users/bob").status_code == 204
        assert client.get("/").headers["location"] == "/login"
    with manager.sessions() as session:  # its row went with its token: no orphan left
        tokens = set(session.scalars(select(ApiToken.token_id)))
        assert set(session.scalars(select(ConsoleSession.token_id))) <= tokens


def test_errors_are_pages(manager: Manager) -> None:
    with signed_in(manager) as client:
        missing = client.get("/groups/nothing")
        assert missing.status_code == 404
        assert "no group named &#39;nothing&#39;" in missing.text
        acknowledged = client.post("/alerts/acknowledge", data={
            "csrf_token": csrf_of(client), "alert_id": "rpo:nothing"})
        assert acknowledged.status_code == 404 and "no active alert" in acknowledged.text
        for answer in (missing, acknowledged):
            assert answer.headers["content-type"].startswith("text/html")
            assert "Traceback" not in answer.text


def test_an_unforeseen_failure_is_a_page_without_its_traceback() -> None:
    parent = FastAPI()
    parent.state.sites = SimpleNamespace(config=SimpleNamespace(name="prod"))
    console = FastAPI()
    install_error_pages(console, parent, page_templates())

    @console.get("/broken")
    def broken() -> None:
        raise RuntimeError("secret detail of a bug")

    with TestClient(console, raise_server_exceptions=False) as client:
        answer = client.get("/broken")
    assert answer.status_code == 500
    assert "log has the details" in answer.text
    assert "secret detail" not in answer.text and "Traceback" not in answer.text


def test_history_and_failover_pages_need_a_session_and_check_their_input(
        manager: Manager) -> None:
    with browser(manager) as client:
        assert client.get("/groups/app/history.json").headers["location"] == "/login"
        polled = client.get("/groups/app/failover-test", headers={"HX-Request": "true"})
        assert polled.headers["hx-redirect"] == "/login"
    with signed_in(manager) as client:
        unknown = client.get("/groups/nothing/history.json")
        assert unknown.status_code == 404 and "no group named" in unknown.text
        bad_range = client.get("/groups/nothing/history.json", params={"range": "2y"})
        assert bad_range.status_code == 400
        assert "range must be one of 1h, 24h, 7d, 30d, not &#39;2y&#39;" in bad_range.text
        review = client.get("/groups/nothing/failover-test/review",
                            params={"checkpoint": "latest"})
        assert review.status_code == 404 and 'id="confirm-form"' not in review.text
        stop = client.post("/groups/nothing/failover-test/stop", data={"result": "pass"})
        assert stop.status_code == 403 and "CSRF token is missing" in stop.text
        for report_id in ("no-such-report", "..%2F..%2Fsite.json"):
            missing = client.get(f"/groups/nothing/reports/{report_id}")
            assert missing.status_code == 404 and "Traceback" not in missing.text
