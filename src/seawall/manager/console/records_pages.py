"""Tasks (syncs and recovery operations with their progress) and recovery reports: parse,
call the services the API's routes call (``TaskService``, ``ReportStore``), render.

Rules:
- The tasks' table refreshes itself every 2 s (an htmx fragment, as the dashboard's) and,
  as that one, its polling does not keep the session alive.
- A report's own page (``ReportStore.html``, the standalone file the CLI and API give) is
  shown inside the console in a sandboxed frame. That one answer carries its own policy
  (``REPORT_CSP``): nothing may load, only its one inline stylesheet, by its hash (no
  ``unsafe-inline``), no script, framed only by this origin. Every other answer keeps the
  console's policy.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from seawall.manager.console.routes import _manager, _render, polling, signed_in
from seawall.manager.console.sessions import ConsoleUser

router = APIRouter(include_in_schema=False)

_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def report_csp(page: str) -> str:
    """The policy of a report's page: its inline stylesheets by hash, nothing else."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode() + "'"
        for style in _STYLE.findall(page))
    return (f"default-src 'none'; style-src {hashes or chr(39) + 'none' + chr(39)}; "
            "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox")


@router.get("/tasks")
def tasks_page(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    tasks = _manager(request).tasks.list(include_finished=True)
    return _render(request, "tasks.html", {"tasks": tasks}, user)


@router.get("/fragments/tasks")
def tasks_fragment(request: Request, user: ConsoleUser = Depends(polling)) -> Response:
    tasks = _manager(request).tasks.list(include_finished=True)
    return _render(request, "tasks_table.html", {"tasks": tasks}, user)


@router.get("/reports")
def reports_page(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    reports = list(reversed(_manager(request).reports.list_all()))
    return _render(request, "reports.html", {"reports": reports}, user)


@router.get("/reports/{report_id}")
def report_page(request: Request, report_id: str,
                user: ConsoleUser = Depends(signed_in)) -> Response:
    report = _manager(request).reports.get(report_id)  # NotFound: a 404 page
    return _render(request, "report.html", {"report": report}, user)


@router.get("/reports/{report_id}/page")
def report_html(request: Request, report_id: str,
                user: ConsoleUser = Depends(signed_in)) -> Response:
    page = _manager(request).reports.html(report_id)
    return HTMLResponse(page, headers={"Content-Security-Policy": report_csp(page),
                                       "X-Frame-Options": "SAMEORIGIN"})
