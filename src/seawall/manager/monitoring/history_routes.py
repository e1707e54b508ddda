"""The history route: parse, call ``HistoryService``, return."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from seawall.manager.monitoring.history import HistoryService

router = APIRouter(prefix="/api/v1", tags=["monitoring"])


@router.get("/groups/{name}/history")
def group_history(request: Request, name: str,
                  range_name: Literal["1h", "24h", "7d", "30d"] = Query("1h", alias="range"),
                  ) -> dict[str, Any]:
    service: HistoryService = request.app.state.history
    return service.history(name, range_name)
