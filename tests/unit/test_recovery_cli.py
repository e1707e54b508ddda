"""The recovery commands' human output, against canned manager answers (no sites).

The end-to-end tests drive ``--json``; this checks that the tables and lines people read
are printed from the same answers without tripping over a field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from seawall.cli import live, recovery
from seawall.cli.main import app

CHECKPOINT = {"id": 42, "time_ns": 1_700_000_000_000_000_000, "name": "before-upgrade"}
IMAGE = {"volume": "disk0", "uri": "nbd+unix:///x?socket=/s", "scratch_used_bytes": 8192,
         "scratch_limit_bytes": 1 << 20, "scratch_alert": True}
TEST = {"id": "test-1", "kind": "failover-test", "state": "running", "checkpoint": CHECKPOINT,
        "rto_s": 0.05, "images": [IMAGE], "started_at": "2025-01-01T00:00:00+00:00", "user": "ops"}
REPORT = {**TEST, "group": "app", "site": "dr", "state": "stopped",
          "result": "pass", "notes": "fine", "ended_at": "2025-01-01T00:01:00+00:00",
          "error": None, "steps": [{"step": "requested", "at": "t", "elapsed_s": 0.0}]}
CLONE = {"id": "clone-1", "state": "done", "checkpoint": CHECKPOINT, "error": None,
         "outputs": [{"volume": "disk0", "path": "/c/disk0.raw", "format": "raw"}]}

LIVE = {**TEST, "id": "live-1", "kind": "failover-live", "commit_deadline": "2025-01-01T01:00",
        "options": {"commit_policy": "rollback"},
        "images": [{"volume": "disk0", "name": "disk0", "uri": "nbd+unix:///disk0?socket=/s"}]}
COMMITTED = {**LIVE, "state": "committed", "error": None, "reverse": {"peer": "prod"}}
SOURCE_VM = {"vm": "web", "uuid": "u", "result": "clean", "seconds": 3.2,
             "detail": "shut down cleanly (guest agent) in 3.2 s"}
BOOTED_VM = {"vm": "web", "domain": "web", "state": "ready", "started_s": 1.0, "ready_s": 9.0,
             "network": "prod-net", "console_log": "/c/web.log",
             "notes": ["NVRAM left out: the recovered VM starts with fresh firmware variables"]}


class CannedManager:
    def get(self, path: str) -> Any:
        return {"/api/v1/failover/app": {"group": "app", "operation": TEST},
                "/api/v1/failover/other": {"group": "other", "operation": None},
                "/api/v1/failover/other/live": {"group": "other", "operation": LIVE},
                "/api/v1/reports": [REPORT], "/api/v1/reports/test-1": REPORT,
                "/api/v1/clones/clone-1": CLONE}[path]

    def post(self, path: str, body: dict[str, Any], timeout_s: float | None = None) -> Any:
        assert "user" not in body  # the manager records who is authenticated
        if path == "/api/v1/move/app":  # waits for the source VMs' shutdown, and more
            assert body["shutdown_timeout_s"] == 120 and timeout_s and timeout_s > 120
        return {"/api/v1/failover/app/test": TEST, "/api/v1/failover/app/stop": REPORT,
                "/api/v1/clones": {**CLONE, "state": "running"},
                "/api/v1/failover/app/live": LIVE, "/api/v1/failover/app/commit": COMMITTED,
                "/api/v1/failover/app/rollback": {**LIVE, "state": "rolled-back",
                                                  "error": None},
                "/api/v1/move/app": {**COMMITTED, "kind": "move", "source_vms": [SOURCE_VM],
                                     "vms": [BOOTED_VM]},
                "/api/v1/groups/app/reverse": {"peer": "prod"}}[path]

    def text(self, path: str) -> str:
        return "<!DOCTYPE html>page"


@pytest.mark.parametrize(("args", "shown"), [
    (["failover", "test", "app"], "every volume readable in 0.050 s"),
    (["failover", "status", "app"], "over 80%"),
    (["failover", "stop", "app", "--result", "pass"], "report test-1"),
    (["report", "list"], "test-1"),
    (["report", "show", "test-1"], "before-upgrade"),
    (["clone", "app", "--checkpoint", "42", "--to", "/c"], "/c/disk0.raw"),
    (["failover", "status", "other"], "commit policy: rollback"),
    (["failover", "live", "app", "--commit-policy", "rollback"], "rollback by itself"),
    (["failover", "commit", "app", "--reverse-protect"], "reverse protection to prod"),
    (["failover", "rollback", "app"], "rolled back"),
    (["move", "app", "--shutdown-timeout", "2m"], "moved to this site"),
    (["move", "app", "--shutdown-timeout", "2m"], "source VM web: shut down cleanly (guest agent)"),
    (["move", "app", "--shutdown-timeout", "2m"], "VM web: NVRAM left out"),
    (["group", "reverse", "app"], "protected from this site to prod"),
])
def test_human_output(monkeypatch: pytest.MonkeyPatch, args: list[str], shown: str) -> None:
    monkeypatch.setattr(recovery, "manager", lambda url, token=None: CannedManager())
    monkeypatch.setattr(live, "manager", lambda url, token=None: CannedManager())
    monkeypatch.setattr(recovery, "CLONE_POLL_S", 0.0)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert shown in " ".join(result.output.split())


def test_report_html_is_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(recovery, "manager", lambda url, token=None: CannedManager())
    page = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", "show", "test-1", "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert page.read_text() == "<!DOCTYPE html>page"
