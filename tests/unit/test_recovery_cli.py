"""The recovery commands' human output, against canned manager answers (no sites).

The end-to-end tests drive ``--json``; this checks that the tables and lines people read
are printed from the same answers without tripping over a field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from seawall.cli import recovery
from seawall.cli.main import app

CHECKPOINT = {"id": 42, "time_ns": 1_700_000_000_000_000_000, "name": "before-upgrade"}
IMAGE = {"volume": "disk0", "uri": "nbd+unix:///x?socket=/s", "scratch_used_bytes": 8192,
         "scratch_limit_bytes": 1 << 20, "scratch_alert": True}
TEST = {"id": "test-1", "state": "running", "checkpoint": CHECKPOINT, "rto_s": 0.05,
        "images": [IMAGE], "started_at": "2025-01-01T00:00:00+00:00", "user": "ops"}
REPORT = {**TEST, "kind": "failover-test", "group": "app", "site": "dr", "state": "stopped",
          "result": "pass", "notes": "fine", "ended_at": "2025-01-01T00:01:00+00:00",
          "error": None, "steps": [{"step": "requested", "at": "t", "elapsed_s": 0.0}]}
CLONE = {"id": "clone-1", "state": "done", "checkpoint": CHECKPOINT, "error": None,
         "outputs": [{"volume": "disk0", "path": "/c/disk0.raw", "format": "raw"}]}


class CannedManager:
    def get(self, path: str) -> Any:
        return {"/api/v1/failover/app": {"group": "app", "operation": TEST},
                "/api/v1/reports": [REPORT], "/api/v1/reports/test-1": REPORT,
                "/api/v1/clones/clone-1": CLONE}[path]

    def post(self, path: str, body: dict[str, Any]) -> Any:
        assert body.get("user")
        return {"/api/v1/failover/app/test": TEST, "/api/v1/failover/app/stop": REPORT,
                "/api/v1/clones": {**CLONE, "state": "running"}}[path]

    def text(self, path: str) -> str:
        return "<!DOCTYPE html>page"


@pytest.mark.parametrize(("args", "shown"), [
    (["failover", "test", "app"], "every volume readable in 0.050 s"),
    (["failover", "status", "app"], "over 80%"),
    (["failover", "stop", "app", "--result", "pass"], "report test-1"),
    (["report", "list"], "test-1"),
    (["report", "show", "test-1"], "before-upgrade"),
    (["clone", "app", "--checkpoint", "42", "--to", "/c"], "/c/disk0.raw"),
])
def test_human_output(monkeypatch: pytest.MonkeyPatch, args: list[str], shown: str) -> None:
    monkeypatch.setattr(recovery, "manager", lambda url: CannedManager())
    monkeypatch.setattr(recovery, "CLONE_POLL_S", 0.0)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert shown in " ".join(result.output.split())


def test_report_html_is_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(recovery, "manager", lambda url: CannedManager())
    page = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", "show", "test-1", "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert page.read_text() == "<!DOCTYPE html>page"
