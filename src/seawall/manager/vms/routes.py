"""VM routes: parse, call ``VmService`` / ``VmConfigs``, return."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from seawall.manager.access.guard import peer_site
from seawall.manager.vms.configs import VmConfigs
from seawall.manager.vms.service import VmService

router = APIRouter(prefix="/api/v1", tags=["vms"])
CheckpointQuery = Annotated[str, Query(min_length=1, max_length=32, description=(
    "A checkpoint id, or latest (the newest consistent one)"))]


@router.get("/vms")
def list_vms(request: Request, agent: Annotated[str | None, Query(
        min_length=1, max_length=63, description="Only this agent's VMs (`seawall agent "
        "list`); default: every agent's.")] = None) -> list[dict[str, Any]]:
    service: VmService = request.app.state.vms
    return service.list_all(agent)


@router.get("/groups/{name}/vms/{vm}")
def show_vm(request: Request, name: str, vm: str,
            checkpoint: CheckpointQuery = "latest") -> dict[str, Any]:
    """A protected VM's configuration at a checkpoint (name, disks, NICs, definition)."""
    configs: VmConfigs = request.app.state.vm_configs
    return configs.show(name, vm, checkpoint)


@router.get("/peer/groups/{name}/vms/{vm}")
def peer_show_vm(request: Request, name: str, vm: str,
                 checkpoint: CheckpointQuery = "latest") -> dict[str, Any]:
    """The same, asked by the group's protected site."""
    configs: VmConfigs = request.app.state.vm_configs
    return configs.show_for_peer(name, vm, checkpoint, peer_site(request))
