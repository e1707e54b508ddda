"""The recovery manager's plan for a live failover's VMs at commit and rollback (a real
database, a fake agent that records the calls in order; the VMs' real run is
tests/vm/test_libvirt_move.py).

- commit: the VMs are held (defined, memory saved) before the agent consolidates, resumed
  after; a resume that fails leaves the commit standing, with the way out in its report;
  an operation that booted no VM (none, or none that could be booted) asks nothing
  about VMs.
- rollback: the agent's rollback (which destroys the VMs before the images close) and the
  source unfenced when the failover had fenced it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from seawall.config import SiteConfig
from seawall.errors import PeerError
from seawall.http import JsonClient
from seawall.manager.groups.service import GroupService
from seawall.manager.models import Group, RecoveryOperation, create_database
from seawall.manager.recovery.live import FailoverLiveService
from seawall.manager.recovery.reports import ReportStore
from seawall.manager.recovery.store import OperationStore

OPERATION = "move-1"
IMAGE = {"volume": "web-vda", "name": "web-vda", "uri": "nbd+unix:///web-vda?socket=/s",
         "size_bytes": 1 << 20}
BOOTED = {"vm": "web", "domain": "web", "state": "ready"}


class FakeAgent:
    """The agent's live-failover routes; ``calls`` in order (method, last path parts)."""

    def __init__(self, resume_fails: bool = False) -> None:
        self.calls: list[str] = []
        self.resume_fails = resume_fails

    def request(self, method: str, path: str, json: Any = None,
                params: dict[str, Any] | None = None, timeout_s: float | None = None) -> Any:
        run = {"operation_id": OPERATION, "group_id": "g1", "state": "running",
               "images": [IMAGE]}
        if (method, path) == ("GET", "/failover-live"):
            return [run]
        self.calls.append(f"{method} {path.removeprefix(f'/failover-live/{OPERATION}')}")
        if path.endswith("/vms/resume") and self.resume_fails:
            raise PeerError("libvirt: the saved state does not restore")
        if path.endswith(("/vms/hold", "/vms/resume")):
            return {"domains": ["web"]}
        if method == "GET":
            return {**run, "state": "committed"}
        return run


class FakeGroups:
    def __init__(self) -> None:
        self.group = Group(group_id="g1", name="app", role="recovery", volumes=[
            {"name": "web-vda", "size_bytes": 1 << 20}], boot_order=[])
        self.unfenced: list[str] = []
        self.roles: list[str] = []

    def get(self, name: str) -> tuple[Group, Any]:
        return self.group, None

    def unfence(self, name: str) -> dict[str, Any]:
        self.unfenced.append(name)
        return {}

    def set_role(self, group_id: str, role: str,
                 volumes: list[dict[str, Any]] | None = None) -> None:
        self.roles.append(role)


def live_service(tmp_path: Path, agent: FakeAgent,
                 details: dict[str, Any]) -> tuple[FailoverLiveService, FakeGroups]:
    config = SiteConfig.create("dr", tmp_path / "site", "127.0.0.1:1", "127.0.0.1:2")
    _engine, sessions = create_database(config.database_url)
    store = OperationStore(sessions)
    groups = FakeGroups()
    store.create(RecoveryOperation(
        operation_id=OPERATION, kind="move", group_id="g1", group_name="app",
        state="running", holds_group_id="g1", checkpoint_id=7, checkpoint_time_ns=1,
        checkpoint_name="final", user="ops", started_at=datetime.now(UTC), notes="",
        details={"steps": [], "images": [IMAGE], "options": {"commit_policy": "none"},
                 "commit_deadline": datetime.now(UTC).isoformat(), **details}))
    service = FailoverLiveService(config, store, ReportStore(config.reports_dir),
                                  cast(JsonClient, agent), cast(GroupService, groups))
    return service, groups


def test_commit_holds_the_vms_before_the_agent_consolidates_and_resumes_them_after(
        tmp_path: Path) -> None:
    agent = FakeAgent()
    service, groups = live_service(tmp_path, agent, {"vms": [BOOTED]})
    report = service.commit("app", "ops")
    assert agent.calls == ["POST /vms/hold", "POST /commit", "GET ", "POST /vms/resume"]
    assert report["state"] == "committed" and report["error"] is None
    steps = [step["step"] for step in report["steps"]]
    assert steps[-3:] == ["VMs saved", "VMs resumed on the committed volumes",
                          "images consolidated into volumes"]
    assert groups.roles == ["failed-over"]


def test_a_resume_that_fails_leaves_the_commit_standing_with_the_way_out(
        tmp_path: Path) -> None:
    agent = FakeAgent(resume_fails=True)
    service, groups = live_service(tmp_path, agent, {"vms": [BOOTED]})
    report = service.commit("app", "ops")
    assert report["state"] == "committed" and groups.roles == ["failed-over"]
    assert "could not be resumed" in report["error"] and "virsh start" in report["error"]


@pytest.mark.parametrize("details", [{}, {"vms": []}, {"vms": [
    {"vm": "web", "state": "failed", "error": "no libvirt at the recovery host"}]}])
def test_an_operation_without_vms_asks_nothing_about_them(
        tmp_path: Path, details: dict[str, Any]) -> None:
    agent = FakeAgent()
    service, _ = live_service(tmp_path, agent, details)
    service.commit("app", "ops")
    assert agent.calls == ["POST /commit", "GET "]


def test_rollback_asks_the_agent_then_unfences_a_fenced_source(tmp_path: Path) -> None:
    agent = FakeAgent()
    service, groups = live_service(tmp_path, agent, {"vms": [BOOTED], "source_fenced": True})
    report = service.rollback("app", "ops")
    assert agent.calls == ["DELETE "]  # the agent's rollback destroys the VMs first
    assert groups.unfenced == ["app"] and groups.roles == []
    assert report["state"] == "rolled-back"
