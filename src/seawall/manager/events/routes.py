"""Event log routes: parse, call ``EventLog``, return."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from seawall.manager.events.log import LIMIT_MAX, EventLog

router = APIRouter(prefix="/api/v1", tags=["events"])


@router.get("/events")
def list_events(
    request: Request,
    group: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=LIMIT_MAX),
) -> list[dict[str, Any]]:
    events: EventLog = request.app.state.events
    return events.list(group, limit)
