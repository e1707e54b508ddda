"""Recovery routes (failover tests, clones, reports): parse, call the service, return."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from seawall.contract.recovered_vms import NetworkKey, NetworkName
from seawall.manager.recovery.clones import CloneService
from seawall.manager.recovery.failover import FailoverTestService
from seawall.manager.recovery.live import SHUTDOWN_TIMEOUT_S, FailoverLiveService, LiveOptions
from seawall.manager.recovery.reports import ReportStore

router = APIRouter(prefix="/api/v1", tags=["recovery"])

CheckpointField = Field(default="latest", min_length=1, max_length=32)


class FailoverTestRequest(BaseModel):
    checkpoint: str = CheckpointField
    at: datetime | None = None
    scratch_max_bytes: int | None = Field(default=None, gt=0)
    network_map: dict[NetworkKey, NetworkName] = Field(default={}, max_length=256)
    """VMs' NICs (MAC, or the network or bridge they were on) -> a recovery network."""


class FailoverStopRequest(BaseModel):
    result: Literal["pass", "fail"] | None = None
    notes: str = Field(default="", max_length=20000)


class CloneRequest(BaseModel):
    group: str = Field(min_length=1, max_length=64)
    checkpoint: str = CheckpointField
    to: str = Field(min_length=1, max_length=4096)
    format: Literal["raw", "qcow2"] = "raw"
    define: bool = False  # also define the VMs' definitions at the recovery host, shut off


def _who(request: Request) -> str:
    """The authenticated user (``seawall.manager.access.guard``), never a name the client sent."""
    user: str = request.state.user
    return user


def _failover(request: Request) -> FailoverTestService:
    service: FailoverTestService = request.app.state.failover_tests
    return service


def _clones(request: Request) -> CloneService:
    service: CloneService = request.app.state.clones
    return service


def _reports(request: Request) -> ReportStore:
    store: ReportStore = request.app.state.reports
    return store


@router.post("/failover/{group}/test", status_code=201)
def failover_test(request: Request, group: str, body: FailoverTestRequest) -> dict[str, Any]:
    return _failover(request).start(group, body.checkpoint, body.scratch_max_bytes,
                                    _who(request), body.at, body.network_map)


@router.post("/failover/{group}/stop")
def failover_stop(request: Request, group: str, body: FailoverStopRequest) -> dict[str, Any]:
    return _failover(request).stop(group, body.result, body.notes, _who(request))


@router.get("/failover/{group}")
def failover_status(request: Request, group: str) -> dict[str, Any]:
    return _failover(request).status(group)


@router.post("/clones", status_code=202)
def clone(request: Request, body: CloneRequest) -> dict[str, Any]:
    return _clones(request).start(body.group, body.checkpoint, body.to, body.format,
                                  _who(request), body.define)


@router.get("/clones/{operation_id}")
def clone_status(request: Request, operation_id: str) -> dict[str, Any]:
    return _clones(request).get(operation_id)


@router.get("/reports")
def list_reports(request: Request) -> list[dict[str, Any]]:
    return _reports(request).list_all()


@router.get("/reports/{report_id}")
def show_report(request: Request, report_id: str) -> dict[str, Any]:
    return _reports(request).get(report_id)


@router.get("/reports/{report_id}/html", response_class=HTMLResponse)
def show_report_html(request: Request, report_id: str) -> HTMLResponse:
    return HTMLResponse(_reports(request).html(report_id))


class FailoverLiveRequest(BaseModel):
    checkpoint: str = CheckpointField
    at: datetime | None = None
    commit_policy: Literal["commit", "rollback", "none"] = "none"
    commit_after_s: float = Field(default=3600.0, ge=1.0, le=30 * 86400.0)
    shutdown_source: bool = False
    reverse_protect: bool = False
    network_map: dict[NetworkKey, NetworkName] = Field(default={}, max_length=256)
    """VMs' NICs (MAC, or the network or bridge they were on) -> a recovery network."""
    shutdown_timeout_s: float = Field(default=SHUTDOWN_TIMEOUT_S, gt=0, le=86400)
    """With ``shutdown_source``: the source VMs are powered off after this long."""


class CommitRequest(BaseModel):
    reverse_protect: bool = False


class MoveRequest(CommitRequest):
    network_map: dict[NetworkKey, NetworkName] = Field(default={}, max_length=256)
    shutdown_timeout_s: float = Field(default=SHUTDOWN_TIMEOUT_S, gt=0, le=86400)


def _live(request: Request) -> FailoverLiveService:
    service: FailoverLiveService = request.app.state.live
    return service


@router.post("/failover/{group}/live", status_code=201)
def failover_live(request: Request, group: str, body: FailoverLiveRequest) -> dict[str, Any]:
    options = LiveOptions(**body.model_dump())
    return _live(request).live(group, options, _who(request))


@router.get("/failover/{group}/live")
def failover_live_status(request: Request, group: str) -> dict[str, Any]:
    return _live(request).status(group)


@router.post("/failover/{group}/commit")
def failover_commit(request: Request, group: str, body: CommitRequest) -> dict[str, Any]:
    return _live(request).commit(group, _who(request), body.reverse_protect)


@router.post("/failover/{group}/rollback")
def failover_rollback(request: Request, group: str) -> dict[str, Any]:
    return _live(request).rollback(group, _who(request))


@router.post("/move/{group}")
def move(request: Request, group: str, body: MoveRequest) -> dict[str, Any]:
    return _live(request).move(group, _who(request), body.reverse_protect, body.network_map,
                               body.shutdown_timeout_s)
