"""Recovery reports: one JSON document and one standalone HTML page per finished operation.

Rules:
- A report is written once, when its operation reaches a final state, as
  ``DATA/reports/ID.json`` and ``ID.html`` (each with the one atomic-write helper; JSON
  first, so a listed report always has its data). The files are the record: listing reads
  them, not the database, so reports can be copied away and archived as they are.
- The JSON holds everything the page shows; the page is rendered from it alone
  (``report_html``) and needs nothing else to be read (no external assets).
- Report ids are operation ids; only ids of that shape are looked up (no path tricks).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seawall import __version__
from seawall.atomic import atomic_write
from seawall.errors import NotFound
from seawall.manager.models import RecoveryOperation, utc
from seawall.manager.recovery.report_html import render_html
from seawall.manager.recovery.store import describe

REPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SUMMARY_FIELDS = ("id", "kind", "group", "state", "result", "user", "started_at", "rto_s")


def build_report(operation: RecoveryOperation, site_name: str) -> dict[str, Any]:
    """The report of a finished operation (pure: from the row and the site's name)."""
    report = describe(operation)
    checkpoint = report["checkpoint"]
    checkpoint["time"] = datetime.fromtimestamp(checkpoint["time_ns"] / 1e9, UTC).isoformat()
    report["site"] = site_name
    report["seawall_version"] = __version__
    ended = operation.ended_at
    report["duration_s"] = (round((utc(ended) - utc(operation.started_at)).total_seconds(), 3)
                            if ended is not None else None)
    return report


class ReportStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, report: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        report_id = report["id"]
        atomic_write(self.directory / f"{report_id}.json",
                     json.dumps(report, indent=2, sort_keys=True).encode() + b"\n")
        atomic_write(self.directory / f"{report_id}.html", render_html(report).encode())

    def list_all(self) -> list[dict[str, Any]]:
        """Summaries of every report, oldest first."""
        if not self.directory.exists():
            return []
        summaries = []
        for path in self.directory.glob("*.json"):
            report = json.loads(path.read_text())
            summaries.append({key: report.get(key) for key in SUMMARY_FIELDS})
        return sorted(summaries, key=lambda s: (s["started_at"] or "", s["id"]))

    def get(self, report_id: str) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self._path(report_id, "json").read_text())
        return report

    def html(self, report_id: str) -> str:
        return self._path(report_id, "html").read_text()

    def _path(self, report_id: str, suffix: str) -> Path:
        path = self.directory / f"{report_id}.{suffix}"
        if not REPORT_ID.match(report_id) or not path.is_file():
            raise NotFound(f"no report {report_id!r} at this site (see `seawall report list`)")
        return path
