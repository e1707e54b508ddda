"""The alerts table and the event log on a real (SQLite, migrated) database.

Alerts: raised once, updated in place while active, cleared, raised again as a new row
with the same id; the agent-dependent alerts of an undetermined group stay; held in memory
while the database's file system (a real tmpfs, filled) is full. Events: a real
FastAPI app with the event middleware records mutating calls with who, what, target and
outcome (the error's code and message for a failure), and nothing for reads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from seawall.errors import Conflict
from seawall.http import install_error_handler
from seawall.manager.events.log import EventLog
from seawall.manager.events.middleware import EventMiddleware
from seawall.manager.models import create_database
from seawall.manager.monitoring.alerts import AlertStore
from seawall.manager.monitoring.policy import Alert, Evaluation, Kind, Severity
from support.tmpfs import fill, mounted_tmpfs

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    _engine, made = create_database(f"sqlite:///{tmp_path / 'manager.db'}")
    return made


def evaluation(*alerts: Alert, undetermined: set[str] | None = None) -> Evaluation:
    return Evaluation({alert.key: alert for alert in alerts}, undetermined or set())


def rpo(severity: Severity, message: str = "RPO high") -> Alert:
    return Alert(Kind.RPO, "app", severity, message, "app")


PEER_DOWN = Alert(Kind.PEER_UNREACHABLE, "dr", Severity.ERROR, "peer site dr does not answer")


def test_alerts_raise_update_clear_and_raise_again(sessions: sessionmaker[Session]) -> None:
    store = AlertStore(sessions)
    assert store.apply(evaluation(rpo(Severity.WARNING), PEER_DOWN), T0) == (
        ["rpo:app", "peer-unreachable:dr"], [])
    later = T0 + timedelta(seconds=5)
    assert store.apply(evaluation(rpo(Severity.ERROR, "RPO higher"), PEER_DOWN), later) == ([], [])
    [peer, alert] = store.list()  # errors first, oldest first
    assert (peer["id"], alert["id"]) == ("peer-unreachable:dr", "rpo:app")
    assert (alert["severity"], alert["message"], alert["since"]) == (
        "error", "RPO higher", T0.isoformat())
    assert store.list(group="app") == [alert]

    assert store.apply(evaluation(rpo(Severity.ERROR)), later) == ([], ["peer-unreachable:dr"])
    assert [a["id"] for a in store.list()] == ["rpo:app"]
    cleared = [a for a in store.list(include_cleared=True) if not a["active"]]
    assert [(a["id"], a["cleared_at"]) for a in cleared] == [
        ("peer-unreachable:dr", later.isoformat())]

    again = T0 + timedelta(seconds=10)
    assert store.apply(evaluation(rpo(Severity.ERROR), PEER_DOWN), again) == (
        ["peer-unreachable:dr"], [])
    history = [a for a in store.list(include_cleared=True) if a["id"] == "peer-unreachable:dr"]
    assert sorted((a["since"], a["active"]) for a in history) == [
        (T0.isoformat(), False), (again.isoformat(), True)]

    assert store.prune(later) == 0 and store.prune(again) == 1  # cleared before `again`


def test_an_undetermined_group_keeps_its_agent_alerts(sessions: sessionmaker[Session]) -> None:
    store = AlertStore(sessions)
    overdue = Alert(Kind.TEST_OVERDUE, "app", Severity.WARNING, "test overdue", "app")
    store.apply(evaluation(rpo(Severity.WARNING), overdue), T0)
    agent_down = Alert(Kind.AGENT_UNREACHABLE, "agent", Severity.ERROR, "agent down")
    raised, cleared = store.apply(evaluation(agent_down, undetermined={"app"}), T0)
    assert (raised, cleared) == (["agent-unreachable:agent"], ["test-overdue:app"])
    assert {a["id"] for a in store.list()} == {"rpo:app", "agent-unreachable:agent"}
    assert store.apply(evaluation(), T0)[1] == ["rpo:app", "agent-unreachable:agent"]


class Thing(BaseModel):
    name: str
    password: str = ""


def events_app(log: EventLog) -> FastAPI:
    app = FastAPI()
    install_error_handler(app)
    app.add_middleware(EventMiddleware, events=log, identify={"tok-bob": "bob"}.get)

    @app.post("/api/v1/groups", status_code=201)
    def create_group(request: Request, body: Thing) -> dict[str, Any]:
        request.state.user = "alice"
        return {"name": body.name}

    @app.post("/api/v1/groups/{name}/checkpoints", status_code=201)
    def tag_checkpoint(name: str, body: Thing) -> dict[str, Any]:
        if name == "busy":
            raise Conflict(f"group {name} is busy")
        return {"id": 42, "name": body.name}

    @app.get("/api/v1/groups")
    def list_groups() -> list[str]:
        return []

    return app


def test_mutating_calls_are_logged_with_who_what_and_outcome(
    sessions: sessionmaker[Session],
) -> None:
    log = EventLog(sessions)
    with TestClient(events_app(log)) as client:
        assert client.post("/api/v1/groups", json={"name": "app", "password": "s3cret"}
                           ).status_code == 201
        assert client.post("/api/v1/groups/app/checkpoints", json={"name": "v1"}
                           ).status_code == 201
        assert client.post("/api/v1/groups/busy/checkpoints", json={"name": "v2"}
                           ).status_code == 409
        assert client.post("/api/v1/groups", json={}).status_code == 422
        assert client.get("/api/v1/groups").status_code == 200
        # no route ran, so no guard named the caller: the owner of its token is named
        assert client.post("/api/v1/nothing", headers={"Authorization": "Bearer tok-bob"}
                           ).status_code == 404
        assert client.post("/api/v1/nothing", headers={"Authorization": "Bearer forged"}
                           ).status_code == 404
    unrouted = log.list()[:2]
    assert [(e["operation"], e["user"]) for e in unrouted] == [
        ("POST /api/v1/nothing", "anonymous"), ("POST /api/v1/nothing", "bob")]
    events = log.list()[2:]
    assert [(e["operation"], e["group"], e["outcome"], e["error_code"]) for e in events] == [
        ("create group", None, "error", "invalid_input"),
        ("tag checkpoint", "busy", "error", "conflict"),
        ("tag checkpoint", "app", "ok", None),
        ("create group", "app", "ok", None),
    ]
    failed, tagged, created = events[1], events[2], events[3]
    assert (created["user"], created["target"]) == ("alice", "app")
    assert tagged["user"] == "anonymous" and tagged["message"] == "id 42 name v1"
    assert (failed["status_code"], failed["message"]) == (409, "group busy is busy")
    assert "s3cret" not in repr(events)
    assert [e["operation"] for e in log.list(group="app")] == ["tag checkpoint", "create group"]
    assert len(log.list(limit=1)) == 1


def test_alerts_are_held_in_memory_while_the_database_is_full(tmp_path: Path) -> None:
    """The manager's own alert about a full disk used to fail (`database or disk is full`)
    and leave `alert list` empty; now it is served from memory, and stored once it can."""
    with mounted_tmpfs(tmp_path / "fs", 4 << 20) as root:
        _engine, made = create_database(f"sqlite:///{root / 'manager.db'}")
        store = AlertStore(made)
        store.apply(evaluation(rpo(Severity.WARNING)), T0)
        fill(root / "filler", leave_bytes=0)
        later = T0 + timedelta(seconds=5)
        for _round in range(20):  # pages the database kept free may take a few rows first
            raised, cleared = store.apply(evaluation(rpo(Severity.WARNING), PEER_DOWN), later)
            if "manager-database:database" in raised:
                break
        else:
            raise AssertionError("the database never refused a write")
        assert "manager-database:database" in raised and cleared == []
        listed = {a["id"]: a for a in store.list()}
        assert set(listed) == {"rpo:app", "peer-unreachable:dr", "manager-database:database"}
        assert "database or disk is full" in listed["manager-database:database"]["message"]
        assert listed["rpo:app"]["since"] == T0.isoformat()  # its row's, read back
        assert store.apply(evaluation(rpo(Severity.WARNING), PEER_DOWN), later) == ([], [])
        assert [a["id"] for a in store.list(group="app")] == ["rpo:app"]

        (root / "filler").unlink()
        again = later + timedelta(seconds=5)
        assert store.apply(evaluation(rpo(Severity.WARNING), PEER_DOWN), again) == (
            [], ["manager-database:database"])
        stored = {a["id"]: a for a in store.list()}
        assert set(stored) == {"rpo:app", "peer-unreachable:dr"}
        assert stored["peer-unreachable:dr"]["since"] == later.isoformat()  # when first held
        _engine.dispose()
