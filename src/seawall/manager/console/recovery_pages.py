"""The group page's history charts and failover test wizard, and recovery reports.

Rules:
- The charts' data is the history service's answer, as ``GET /api/v1/groups/{name}/history``
  gives it (same call, same JSON), read with the session (a polling read: it does not move
  the idle deadline) by ``static/charts.js``.
- The wizard runs at a group's recovery site, through the service the API's routes call
  (``FailoverTestService``), with the API's roles (``ConsoleUser.may``): the panel reads
  like ``GET /api/v1/failover/{group}``, start and stop are its POSTs. The wizard's
  choice is first reviewed (a GET: what it picks now, by ``pick_checkpoint``, the
  service's own rule), and only the review's confirmation POSTs the start.
- The service's start returns only once every image is readable (and the VMs booted), so
  the console starts it in a thread of its own (``StartingTests``) and answers at once
  (or when it is done, if that is within ``START_WAIT_S``): the panel polls every second
  while a start or a stop is under way and shows the operation's steps; a start that
  failed before its operation row existed (a wrong checkpoint, another operation) is
  shown once on the panel. The operation row itself is the record, as for the API.
- Stopping (with pass/fail and notes) writes the report; the console then shows it: the
  report's own body (``report_body``), in a console page, styled by the console's sheet.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from seawall.errors import InvalidInput, NotFound, SeawallError
from seawall.manager.console import views
from seawall.manager.console.routes import (
    _checked_form,
    _manager,
    _render,
    _text,
    polling,
    signed_in,
)
from seawall.manager.console.sessions import ConsoleUser
from seawall.manager.recovery.failover import KIND as FAILOVER_TEST
from seawall.manager.recovery.machine import pick_checkpoint
from seawall.manager.recovery.report_html import report_body

router = APIRouter(include_in_schema=False)

START = ("POST", "/api/v1/failover/{group}/test")
STOP = ("POST", "/api/v1/failover/{group}/stop")
READ_REPORT = ("GET", "/api/v1/reports/{report_id}/html")
START_WAIT_S = 2.0
UNDER_WAY = ("starting", "stopping")
CHECKPOINTS_SHOWN = 200


class StartingTests:
    """Failover tests a console request is starting, by group; each start's outcome is
    kept until a panel has shown it (an error) or the operation row tells the rest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: dict[str, Future[dict[str, Any]]] = {}

    def launch(self, group: str, start: Any) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()

        def run() -> None:
            try:
                future.set_result(start())
            except BaseException as exc:  # handed to the page that shows it
                future.set_exception(exc)

        with self._lock:
            self._starts[group] = future
        threading.Thread(target=run, name=f"console-test-{group}", daemon=True).start()
        return future

    def take(self, group: str) -> tuple[bool, str | None]:
        """Whether a start of ``group`` is under way, and the error of one that failed
        (given once: the panel shows it, then forgets it)."""
        with self._lock:
            future = self._starts.get(group)
            if future is None:
                return False, None
            if not future.done():
                return True, None
            del self._starts[group]
        error = future.exception()
        if error is None:
            return False, None
        return False, (error.message if isinstance(error, SeawallError)
                       else "the start failed; the site manager's log has the details")


def starting_tests(request: Request) -> StartingTests:
    tests: StartingTests = request.app.state.starting_tests  # made by ``create_console``
    return tests


# --- history ----------------------------------------------------------------------------


@router.get("/groups/{name}/history.json")
def group_history(request: Request, name: str,
                  range_name: str = Query("1h", alias="range", max_length=8),
                  user: ConsoleUser = Depends(polling)) -> Response:
    return JSONResponse(_manager(request).history.history(name, range_name))


# --- the failover test wizard -----------------------------------------------------------


def parse_at(text: str) -> datetime | None:
    """The wizard's time (ISO 8601; without a zone it is UTC), or None if not given."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"time must be like 2026-12-08T01:30:00Z, not {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _panel(request: Request, user: ConsoleUser, name: str,
           error: str | None = None) -> dict[str, Any]:
    manager = _manager(request)
    starting, start_error = starting_tests(request).take(name)
    operation = manager.failover_tests.status(name)["operation"]
    checkpoints: list[dict[str, Any]] = []
    if operation is None and not starting and user.may(*START):
        checkpoints = list(reversed(manager.groups.checkpoints(name)))[:CHECKPOINTS_SHOWN]
        for checkpoint in checkpoints:
            checkpoint["kind"] = views.checkpoint_kind(checkpoint)
    reports = [r for r in manager.reports.list_all()
               if r["group"] == name and r["kind"] == FAILOVER_TEST]
    return {"name": name, "operation": operation, "starting": starting,
            "error": error or start_error, "checkpoints": checkpoints,
            "poll": starting or (operation is not None and operation["state"] in UNDER_WAY),
            "last_report": reports[-1] if reports else None,
            "may_start": user.may(*START), "may_stop": user.may(*STOP),
            "may_read_report": user.may(*READ_REPORT)}


@router.get("/groups/{name}/failover-test")
def failover_status(request: Request, name: str,
                    user: ConsoleUser = Depends(polling)) -> Response:
    return _render(request, "failover_panel.html", _panel(request, user, name), user)


@router.get("/groups/{name}/failover-test/review")
def review_failover_test(request: Request, name: str,
                         checkpoint: str = Query("latest", max_length=32),
                         at: str = Query("", max_length=64),
                         user: ConsoleUser = Depends(signed_in)) -> Response:
    """What the wizard's choice picks now, and the button that starts it (a read: no
    operation is asked, so nothing is logged as one)."""
    wanted = checkpoint.strip() or "latest"
    try:
        chosen = pick_checkpoint(_manager(request).groups.checkpoints(name), wanted,
                                 parse_at(at), name)
    except SeawallError as exc:
        return _confirm_page(request, user, name, wanted, at, None, exc)
    return _confirm_page(request, user, name, wanted, at, chosen, None)


@router.post("/groups/{name}/failover-test")
async def failover_test(request: Request, name: str,
                        user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, START)
    wanted = _text(form, "checkpoint", 32).strip() or "latest"
    at_text = _text(form, "at", 64)
    at = parse_at(at_text)
    manager, who = _manager(request), user.principal.name
    future = starting_tests(request).launch(name, lambda: manager.failover_tests.start(
        name, wanted, None, who, at))
    with contextlib.suppress(TimeoutError):  # still starting: the panel polls
        await run_in_threadpool(future.exception, START_WAIT_S)
    if future.done() and future.exception() is not None:
        starting_tests(request).take(name)  # shown here, not again on the panel
        error = future.exception()
        if not isinstance(error, SeawallError):
            raise RuntimeError("the failover test's start failed") from error
        request.state.error_body = error.body()
        return _confirm_page(request, user, name, wanted, at_text, None, error)
    return RedirectResponse(f"/groups/{name}#failover-test", status_code=303)


def _confirm_page(request: Request, user: ConsoleUser, name: str, wanted: str, at_text: str,
                  chosen: dict[str, Any] | None, error: SeawallError | None) -> Response:
    return _render(request, "failover_confirm.html", {
        "name": name, "wanted": wanted, "at": at_text, "chosen": chosen,
        "error": error.message if error else None, "may_start": user.may(*START)}, user,
        status_code=error.http_status if error else 200)


@router.post("/groups/{name}/failover-test/stop")
async def failover_stop(request: Request, name: str,
                        user: ConsoleUser = Depends(signed_in)) -> Response:
    form = await _checked_form(request, user, STOP)
    result = _text(form, "result", 8) or None
    notes = _text(form, "notes", 20000)
    report = await run_in_threadpool(_manager(request).failover_tests.stop, name, result,
                                     notes, user.principal.name)
    return RedirectResponse(f"/groups/{name}/reports/{report['id']}", status_code=303)


# --- reports ------------------------------------------------------------------------------


@router.get("/groups/{name}/reports/{report_id}")
def report_page(request: Request, name: str, report_id: str,
                user: ConsoleUser = Depends(signed_in)) -> Response:
    report = _manager(request).reports.get(report_id)
    if report.get("group") != name:
        raise NotFound(f"report {report_id} is not of group {name}")
    body = Markup(report_body(report))  # every value in it is escaped by report_body
    return _render(request, "group_report.html", {"name": name, "report": report, "body": body},
                   user)
