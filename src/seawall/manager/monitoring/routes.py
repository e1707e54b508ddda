"""Status and alert routes: parse, call ``StatusService`` / ``AlertStore``, return."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from seawall.manager.access.guard import current_principal
from seawall.manager.access.service import Principal
from seawall.manager.monitoring.alerts import AlertStore
from seawall.manager.monitoring.service import StatusService

router = APIRouter(prefix="/api/v1", tags=["monitoring"])


def _status(request: Request) -> StatusService:
    service: StatusService = request.app.state.status
    return service


def _alerts(request: Request) -> AlertStore:
    store: AlertStore = request.app.state.alerts
    return store


@router.get("/status/groups")
def all_group_status(request: Request) -> list[dict[str, Any]]:
    return _status(request).documents()


@router.get("/status/groups/{name}")
def group_status(request: Request, name: str) -> dict[str, Any]:
    return _status(request).document(name)


@router.get("/alerts")
def list_alerts(
    request: Request,
    include_cleared: bool = Query(False, alias="all"),
    group: str | None = Query(None, max_length=64),
) -> list[dict[str, Any]]:
    return _alerts(request).list(include_cleared, group)


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge_alert(request: Request, alert_id: str,
                      principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _alerts(request).acknowledge(alert_id, principal.name, datetime.now(UTC))
