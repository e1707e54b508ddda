"""The agent's control routes for failover operations: parse, call, return.

``async def`` like every control route, so that images are made and closed in the event
loop that serves their NBD requests (no request sees half a test or half a failover).
Failover tests: ``FailoverTests``; live failovers at the recovery site: ``LiveFailovers``;
the VMs of both: ``RecoveredVms`` (a live failover's VMs held and resumed around its
commit, destroyed before its rollback).
At the protected site: fence (stop taking writes, ship up to a final checkpoint), unfence
(take writes again, after a rollback) and reverse (become the recovery site of the group).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from seawall.agent.failover.vm_boot import live_source, test_source
from seawall.contract.agent import (
    FailoverRun,
    FailoverStart,
    FenceRequest,
    GroupStatus,
    RecoverySpec,
    TaggedCheckpoint,
    same_id,
)
from seawall.contract.recovered_vms import (
    RecoveredDomains,
    RecoveredVm,
    RecoveryNetworks,
    VmBoot,
    VmDefine,
    VmDefined,
)

if TYPE_CHECKING:
    from seawall.agent.service import Agent

def failover_router(agent: Agent) -> APIRouter:
    router = APIRouter()
    tests, live, vms = agent.failover_tests, agent.live, agent.recovered_vms

    @router.get("/failover-tests", response_model=list[FailoverRun])
    async def list_tests() -> list[dict[str, Any]]:
        return tests.list_all()

    @router.post("/failover-tests", response_model=FailoverRun)
    async def start_test(body: FailoverStart) -> dict[str, Any]:
        return tests.start(body.operation_id, body.group_id, body.checkpoint,
                           body.scratch_max_bytes, body.members or None)

    @router.delete("/failover-tests/{operation_id}", response_model=FailoverRun)
    async def stop_test(operation_id: str) -> dict[str, Any]:
        try:
            await vms.stop(operation_id)  # before the images the VMs run on close
        finally:
            result = tests.stop(operation_id)
        return result

    @router.post("/failover-tests/{operation_id}/vms", response_model=RecoveredVm)
    async def boot_test_vm(operation_id: str, body: VmBoot) -> dict[str, Any]:
        return await vms.boot(test_source(tests.get(operation_id)), body.vm, body.network,
                              body.network_map)

    @router.post("/vms/definitions", response_model=VmDefined)
    async def define_vm(body: VmDefine) -> dict[str, Any]:
        return await vms.define(body.name, body.xml)

    @router.get("/recovery-networks", response_model=RecoveryNetworks)
    async def recovery_networks() -> dict[str, Any]:
        return {"networks": await vms.networks()}

    @router.get("/failover-tests/{operation_id}/vms", response_model=list[RecoveredVm])
    async def test_vms(operation_id: str) -> list[dict[str, Any]]:
        tests.get(operation_id)  # NotFound for a test that does not run here
        return await vms.states(operation_id)

    @router.get("/failover-live", response_model=list[FailoverRun])
    async def list_live() -> list[dict[str, Any]]:
        return live.list_all()

    @router.post("/failover-live", response_model=FailoverRun)
    async def start_live(body: FailoverStart) -> dict[str, Any]:
        return await live.start(body.operation_id, body.group_id, body.checkpoint)

    @router.get("/failover-live/{operation_id}", response_model=FailoverRun)
    async def live_status(operation_id: str) -> dict[str, Any]:
        return live.status(operation_id)

    @router.post("/failover-live/{operation_id}/commit", response_model=FailoverRun)
    async def commit_live(operation_id: str) -> dict[str, Any]:
        return live.commit(operation_id)

    @router.delete("/failover-live/{operation_id}", response_model=FailoverRun)
    async def rollback_live(operation_id: str) -> dict[str, Any]:
        if live.status(operation_id)["state"] == "running":  # else rollback refuses
            await vms.stop(operation_id)  # before the images the VMs run on close
        return await live.rollback(operation_id)

    @router.post("/failover-live/{operation_id}/vms", response_model=RecoveredVm)
    async def boot_live_vm(operation_id: str, body: VmBoot) -> dict[str, Any]:
        return await vms.boot(live_source(live.running(operation_id)), body.vm,
                              body.network, body.network_map)

    @router.get("/failover-live/{operation_id}/vms", response_model=list[RecoveredVm])
    async def live_vms(operation_id: str) -> list[dict[str, Any]]:
        return await vms.states(operation_id)

    @router.post("/failover-live/{operation_id}/vms/hold", response_model=RecoveredDomains)
    async def hold_live_vms(operation_id: str) -> dict[str, Any]:
        return {"domains": await vms.hold(operation_id)}

    @router.post("/failover-live/{operation_id}/vms/resume", response_model=RecoveredDomains)
    async def resume_live_vms(operation_id: str) -> dict[str, Any]:
        return {"domains": await vms.resume(operation_id)}

    @router.post("/groups/{group_id}/fence", response_model=TaggedCheckpoint)
    async def fence(group_id: str, body: FenceRequest) -> dict[str, Any]:
        return await agent.source.fence(group_id, body.checkpoint_name, body.timeout_s,
                                        body.shutdown_timeout_s)

    @router.post("/groups/{group_id}/unfence", response_model=GroupStatus)
    async def unfence(group_id: str) -> dict[str, Any]:
        return agent.source.unfence(group_id)

    @router.post("/groups/{group_id}/reverse", response_model=GroupStatus)
    async def reverse(group_id: str, body: RecoverySpec) -> dict[str, Any]:
        same_id(group_id, body.group_id)
        return await agent.source.reverse(body)

    return router
