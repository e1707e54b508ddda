"""The agent's control routes for failover operations: parse, call, return.

``async def`` like every control route, so that images are made and closed in the event
loop that serves their NBD requests (no request sees half a test or half a failover).
Failover tests: ``FailoverTests``. Live failovers at the recovery site: ``LiveFailovers``.
At the protected site: fence (stop taking writes, ship up to a final checkpoint), unfence
(take writes again, after a rollback) and reverse (become the recovery site of the group).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from seawall.agent.state import NAME_PATTERN, RecoverySpec

if TYPE_CHECKING:
    from seawall.agent.service import Agent

OperationIdField = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
FENCE_TIMEOUT_S = 20.0
"""Within the 30 s a manager waits for its peer: the peer call carries the answer back."""


class FailoverStart(BaseModel):
    operation_id: str = OperationIdField
    group_id: str
    checkpoint: str = Field(min_length=1, max_length=32)
    scratch_max_bytes: int | None = Field(default=None, gt=0)


class FenceRequest(BaseModel):
    checkpoint_name: str = Field(default="", max_length=512)
    timeout_s: float = Field(default=FENCE_TIMEOUT_S, gt=0, le=3600)


def failover_router(agent: Agent) -> APIRouter:
    router = APIRouter()
    tests, live = agent.failover_tests, agent.live

    @router.get("/failover-tests")
    async def list_tests() -> list[dict[str, Any]]:
        return tests.list_all()

    @router.post("/failover-tests")
    async def start_test(body: FailoverStart) -> dict[str, Any]:
        return tests.start(body.operation_id, body.group_id, body.checkpoint,
                           body.scratch_max_bytes)

    @router.delete("/failover-tests/{operation_id}")
    async def stop_test(operation_id: str) -> dict[str, Any]:
        return tests.stop(operation_id)

    @router.get("/failover-live")
    async def list_live() -> list[dict[str, Any]]:
        return live.list_all()

    @router.post("/failover-live")
    async def start_live(body: FailoverStart) -> dict[str, Any]:
        return await live.start(body.operation_id, body.group_id, body.checkpoint)

    @router.get("/failover-live/{operation_id}")
    async def live_status(operation_id: str) -> dict[str, Any]:
        return live.status(operation_id)

    @router.post("/failover-live/{operation_id}/commit")
    async def commit_live(operation_id: str) -> dict[str, Any]:
        return live.commit(operation_id)

    @router.delete("/failover-live/{operation_id}")
    async def rollback_live(operation_id: str) -> dict[str, Any]:
        return await live.rollback(operation_id)

    @router.post("/groups/{group_id}/fence")
    async def fence(group_id: str, body: FenceRequest) -> dict[str, Any]:
        return await agent.source.fence(group_id, body.checkpoint_name, body.timeout_s)

    @router.post("/groups/{group_id}/unfence")
    async def unfence(group_id: str) -> dict[str, Any]:
        return agent.source.unfence(group_id)

    @router.post("/groups/{group_id}/reverse")
    async def reverse(group_id: str, body: RecoverySpec) -> dict[str, Any]:
        return await agent.source.reverse(body)

    return router
