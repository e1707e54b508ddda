"""The agent's control API: HTTP over a Unix socket, for its site manager only.

Every route is ``async def`` on purpose: it then runs in the agent's one event loop, like
the NBD requests, so a checkpoint record is ordered with writes without any lock.

Routes parse, call ``Agent``, and return what it returns; errors map in ``seawall.http``.
Bodies and answers are the models of ``seawall.contract.agent`` (the manager's too); a
route whose path names a group refuses a body naming another (``same_id``) before it
changes anything.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import FastAPI, Query

from seawall.agent.control.coordination_routes import coordination_router
from seawall.agent.control.failover_routes import failover_router
from seawall.agent.control.metrics import AgentMetrics
from seawall.agent.control.scripts import scripts_router
from seawall.agent.protect.quiesce import quiesced_checkpoint
from seawall.agent.service import Agent
from seawall.agent.settings import check_paths
from seawall.agent.vms import vm_listing
from seawall.contract.agent import (
    Checkpoint,
    CheckpointTag,
    Coordination,
    ExportCreate,
    ExportDescription,
    GroupRemoved,
    GroupStatus,
    Health,
    MembersChanged,
    PathsCheck,
    PathsChecked,
    PinForget,
    PinsLeft,
    ProtectedMembers,
    ProtectionChange,
    ProtectionSpec,
    RecoveryMembers,
    RecoveryMembersChanged,
    RecoverySpec,
    RetentionChange,
    TaggedCheckpoint,
    VolumeAdd,
    VolumeCreate,
    VolumeInfo,
    VolumeRemoved,
    same_id,
)
from seawall.contract.vms import SinkCreate, VmConfigView, VmListing
from seawall.http import install_error_handler
from seawall.names import check_checkpoint_name


def create_control_app(agent: Agent, shutdown: asyncio.Event, metrics: AgentMetrics) -> FastAPI:
    app = FastAPI(title="Seawall agent", docs_url=None, redoc_url=None)
    install_error_handler(app)

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "agent_id": agent.agent_id,
                "sink_connections": agent.frontend.stall_guard.guarded_connections}

    @app.get("/volumes", response_model=list[VolumeInfo])
    async def list_volumes() -> list[dict[str, Any]]:
        return agent.list_volumes()

    @app.post("/volumes", response_model=VolumeInfo)
    async def create_volume(body: VolumeCreate) -> dict[str, Any]:
        return agent.create_volume(body.name, body.size_bytes)

    @app.post("/volumes/add", response_model=VolumeInfo)
    async def add_volume(body: VolumeAdd) -> dict[str, Any]:
        return agent.add_volume(body.name, body.path)

    @app.get("/vms", response_model=VmListing)
    async def list_vms() -> VmListing:
        return await vm_listing(agent.hypervisor)

    @app.delete("/volumes/{name}", response_model=VolumeRemoved)
    async def remove_volume(name: str) -> dict[str, Any]:
        return agent.membership.remove_volume(name)

    @app.put("/protected/{group_id}/volumes", response_model=MembersChanged)
    async def change_protected_members(group_id: str, body: ProtectedMembers) -> dict[str, Any]:
        return await agent.membership.change_protected(group_id, body.volumes)

    @app.put("/protected/{group_id}/coordination", response_model=GroupStatus)
    async def set_coordination(group_id: str, body: Coordination) -> dict[str, Any]:
        return await agent.membership.set_coordination(group_id, body)

    @app.delete("/protected/{group_id}", response_model=GroupRemoved)
    async def unprotect(group_id: str) -> dict[str, Any]:
        return await agent.membership.unprotect(group_id)

    @app.put("/recovering/{group_id}/volumes", response_model=RecoveryMembersChanged)
    async def change_recovery_members(group_id: str, body: RecoveryMembers) -> dict[str, Any]:
        return await agent.membership.change_recovery(group_id, body)

    @app.delete("/recovering/{group_id}", response_model=GroupRemoved)
    async def remove_recovery(group_id: str, keep_replicas: bool = False,
                              checkpoint: Annotated[int | None, Query(gt=0)] = None,
                              ) -> dict[str, Any]:
        return await agent.membership.remove_recovery(group_id, keep_replicas, checkpoint)

    @app.post("/volumes/sinks", response_model=VolumeInfo)
    async def create_sink(body: SinkCreate) -> dict[str, Any]:
        return agent.create_sink(body.name, body.size_bytes, body.vm_uuid, body.disk)

    @app.put("/protected/{group_id}", response_model=GroupStatus)
    async def protect(group_id: str, body: ProtectionSpec) -> dict[str, Any]:
        same_id(group_id, body.group_id)
        return agent.protect(body)

    @app.patch("/protected/{group_id}", response_model=GroupStatus)
    async def update_protection(group_id: str, body: ProtectionChange) -> dict[str, Any]:
        return agent.update_protection(group_id, body)

    @app.patch("/recovering/{group_id}", response_model=GroupStatus)
    async def update_retention(group_id: str, body: RetentionChange) -> dict[str, Any]:
        return agent.update_retention(group_id, body)

    @app.post("/paths/check", response_model=PathsChecked)
    async def paths_check(body: PathsCheck) -> dict[str, Any]:
        check_paths(body, agent.config)
        return {"ok": True}

    @app.put("/recovering/{group_id}", response_model=GroupStatus)
    async def recover(group_id: str, body: RecoverySpec) -> dict[str, Any]:
        same_id(group_id, body.group_id)
        return agent.recover(body)

    @app.post("/pins/forget", response_model=PinsLeft)
    async def forget_pin(body: PinForget) -> dict[str, Any]:
        return agent.forget_pin(body.cert_pem)

    @app.get("/groups/{group_id}/status", response_model=GroupStatus)
    async def group_status(group_id: str) -> dict[str, Any]:
        return agent.group_status(group_id)

    @app.get("/groups/{group_id}/checkpoints", response_model=list[Checkpoint])
    async def checkpoints(group_id: str, newest: Annotated[int | None, Query(gt=0)] = None,
                          ) -> list[dict[str, Any]]:
        return agent.checkpoints(group_id, newest)

    @app.get("/groups/{group_id}/vm-configs", response_model=list[VmConfigView])
    async def vm_configs(group_id: str, checkpoint: str = "latest") -> list[dict[str, Any]]:
        """Every VM's configuration at a checkpoint of a group recovered here."""
        return agent.recovery_group(group_id).vm_configs(checkpoint)

    @app.get("/groups/{group_id}/vms/{vm}", response_model=VmConfigView)
    async def vm_config(group_id: str, vm: str, checkpoint: str = "latest") -> dict[str, Any]:
        """A VM's configuration at a checkpoint of a group recovered here."""
        return agent.recovery_group(group_id).vm_config(vm, checkpoint)

    @app.post("/groups/{group_id}/checkpoints", response_model=TaggedCheckpoint)
    async def tag(group_id: str, body: CheckpointTag) -> dict[str, Any]:
        group = agent.protected_group(group_id)
        name = check_checkpoint_name(body.name)
        notes: list[str] = []
        tagged = await agent.coordinated.tag(group_id, name, body.quiesce)
        if tagged is not None:
            entry, notes = tagged
        elif body.quiesce:
            entry, notes = await quiesced_checkpoint(group, agent.quiescer, name)
        else:
            entry = group.tag_checkpoint(name)
            await group.persist_checkpoints()
        return {"id": entry.seq, "time_ns": entry.time_ns, "name": entry.name,
                "consistency": entry.consistency, "notes": notes}

    @app.post("/groups/{group_id}/resync", response_model=GroupStatus)
    async def resync(group_id: str) -> dict[str, Any]:
        return agent.resync(group_id)

    @app.get("/exports", response_model=list[ExportDescription])
    async def list_exports() -> list[dict[str, Any]]:
        return agent.list_exports()

    @app.post("/exports", response_model=ExportDescription)
    async def create_export(body: ExportCreate) -> dict[str, Any]:
        return agent.create_export(body.group_id, body.volume, body.checkpoint)

    @app.delete("/exports/{name}", response_model=ExportDescription)
    async def stop_export(name: str) -> dict[str, Any]:
        return agent.stop_export(name)

    app.include_router(failover_router(agent))
    app.include_router(coordination_router(agent.coordinated))
    app.include_router(scripts_router(agent.config))
    app.include_router(metrics.router(with_snapshot=True))

    @app.post("/shutdown")
    async def stop() -> dict[str, str]:
        shutdown.set()
        return {"status": "stopping"}

    return app
