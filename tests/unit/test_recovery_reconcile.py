"""A restarted manager resumes or rolls back failover tests (real databases, a fake agent).

Every test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).

Rows are left as a killed manager would leave them; ``reconcile`` must bring each to the
state the table says, ask the agent to drop what should go, and write each one's report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from seawall.config import SiteConfig
from seawall.errors import Conflict, NotFound
from seawall.http import JsonClient
from seawall.manager.groups.service import GroupService
from seawall.manager.models import RecoveryOperation, create_database
from seawall.manager.recovery.failover import FailoverTestService
from seawall.manager.recovery.reports import ReportStore
from seawall.manager.recovery.store import OperationStore


class FakeAgent:
    """The agent's failover-test routes: which operations it still runs, what was dropped."""

    def __init__(self, running: set[str]) -> None:
        self.running = running
        self.deleted: list[str] = []

    def request(self, method: str, path: str, json: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        """Answers as the agent's contract says (``seawall.contract.agent.FailoverRun``)."""
        if method == "GET":
            assert path == "/failover-tests"
            return [{"operation_id": op, "group_id": f"group-{op}", "images": [],
                     "scratch_alert": False} for op in sorted(self.running)]
        assert method == "DELETE"
        operation_id = path.rsplit("/", 1)[1]
        if operation_id not in self.running:
            raise NotFound(f"no failover test {operation_id}")
        self.running.discard(operation_id)
        self.deleted.append(operation_id)
        return {"operation_id": operation_id, "group_id": f"group-{operation_id}",
                "images": [{"volume": "disk0"}]}


def row(operation_id: str, state: str) -> RecoveryOperation:
    group_id = f"group-{operation_id}"
    return RecoveryOperation(
        operation_id=operation_id, kind="failover-test", group_id=group_id,
        group_name=f"app-{operation_id}", state=state, holds_group_id=group_id,
        checkpoint_id=7, checkpoint_time_ns=1_700_000_000_000_000_000, checkpoint_name="cp",
        user="ops", started_at=datetime.now(UTC), notes="", details={"steps": []})


@pytest.fixture
def setup(tmp_path: Path, database_url: str,
          ) -> tuple[FailoverTestService, OperationStore, FakeAgent, ReportStore]:
    config = SiteConfig.create("dr", tmp_path / "site", "127.0.0.1:1", "127.0.0.1:2",
                               database=database_url)
    _engine, sessions = create_database(config.database_url)
    store, reports = OperationStore(sessions), ReportStore(config.reports_dir)
    agent = FakeAgent({"starting-at-agent", "stopping-at-agent", "running-at-agent"})
    service = FailoverTestService(config, store, reports, cast(JsonClient, agent),
                                  cast(GroupService, None))
    return service, store, agent, reports


def test_restart_resumes_or_rolls_back_each_operation(
    setup: tuple[FailoverTestService, OperationStore, FakeAgent, ReportStore],
) -> None:
    service, store, agent, reports = setup
    for operation_id, state in (("starting-at-agent", "starting"),
                                ("starting-lost", "starting"),
                                ("stopping-at-agent", "stopping"),
                                ("running-lost", "running"),
                                ("running-at-agent", "running")):
        store.create(row(operation_id, state))
    service.reconcile()

    states = {op: store.get(op).state for op in (
        "starting-at-agent", "starting-lost", "stopping-at-agent", "running-lost",
        "running-at-agent")}
    assert states == {"starting-at-agent": "failed", "starting-lost": "failed",
                      "stopping-at-agent": "stopped", "running-lost": "interrupted",
                      "running-at-agent": "running"}
    assert sorted(agent.deleted) == ["starting-at-agent", "stopping-at-agent"]
    assert store.get("running-lost").holds_group_id is None
    assert store.get("running-at-agent").holds_group_id == "group-running-at-agent"
    listed = {r["id"]: r["state"] for r in reports.list_all()}
    assert listed == {op: s for op, s in states.items() if s != "running"}
    interrupted = reports.get("running-lost")
    assert "agent restarted" in interrupted["error"]
    assert interrupted["steps"][-1]["step"] == "images lost"
    assert json.loads((reports.directory / "running-lost.json").read_text()) == interrupted
    assert "<!DOCTYPE html>" in reports.html("running-lost")

    service.reconcile()  # a second pass changes nothing
    assert sorted(agent.deleted) == ["starting-at-agent", "stopping-at-agent"]


def test_an_operation_a_request_is_working_on_is_left_alone(
    setup: tuple[FailoverTestService, OperationStore, FakeAgent, ReportStore],
) -> None:
    service, store, agent, _ = setup
    store.create(row("starting-at-agent", "starting"))
    with service._tracking("starting-at-agent"):
        service.reconcile()
    assert store.get("starting-at-agent").state == "starting" and agent.deleted == []


def test_one_failover_operation_per_group_in_the_database(
    setup: tuple[FailoverTestService, OperationStore, FakeAgent, ReportStore],
) -> None:
    _, store, _, _ = setup
    store.create(row("first", "running"))
    second = row("second", "starting")
    second.group_id = second.holds_group_id = "group-first"
    with pytest.raises(Conflict, match="operation first, by ops"):
        store.create(second)


def test_report_ids_cannot_leave_the_reports_directory(
    setup: tuple[FailoverTestService, OperationStore, FakeAgent, ReportStore],
) -> None:
    _, _, _, reports = setup
    for bad in ("../site", "..", "a/b", ".hidden"):
        with pytest.raises(NotFound):
            reports.get(bad)
