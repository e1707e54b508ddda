"""VM routes: parse, call ``VmService``, return."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from seawall.manager.vms.service import VmService

router = APIRouter(prefix="/api/v1/vms", tags=["vms"])


@router.get("")
def list_vms(request: Request, agent: Annotated[str | None, Query(
        min_length=1, max_length=63, description="Only this agent's VMs (`seawall agent "
        "list`); default: every agent's.")] = None) -> list[dict[str, Any]]:
    service: VmService = request.app.state.vms
    return service.list_all(agent)
