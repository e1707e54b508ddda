"""The agent's control routes for failover tests: parse, call ``FailoverTests``, return.

``async def`` like every control route, so that images are made and closed in the event
loop that serves their NBD requests (no request sees half a test).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from seawall.agent.failover_tests import FailoverTests


class FailoverTestStart(BaseModel):
    operation_id: str = Field(min_length=1, max_length=63)
    group_id: str
    checkpoint: str = Field(min_length=1, max_length=32)
    scratch_max_bytes: int | None = Field(default=None, gt=0)


def failover_router(tests: FailoverTests) -> APIRouter:
    router = APIRouter(prefix="/failover-tests")

    @router.get("")
    async def list_tests() -> list[dict[str, Any]]:
        return tests.list_all()

    @router.post("")
    async def start_test(body: FailoverTestStart) -> dict[str, Any]:
        return tests.start(body.operation_id, body.group_id, body.checkpoint,
                           body.scratch_max_bytes)

    @router.delete("/{operation_id}")
    async def stop_test(operation_id: str) -> dict[str, Any]:
        return tests.stop(operation_id)

    return router
