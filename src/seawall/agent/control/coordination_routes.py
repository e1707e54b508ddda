"""Control routes of coordinated checkpoints: a group's lead calls them at its members.

Only callers whose certificate the control API pins get here (the site manager, and the
lead agents of the groups this agent is a member of). Routes parse and call
``CoordinatedGroups``; the round itself is ``seawall.agent.protect.coordination``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from seawall.agent.protect.coordination import CoordinatedGroups


class Prepare(BaseModel):
    name: str = Field(default="", max_length=512)
    tagged: bool = False


class Release(BaseModel):
    marker_seq: int = Field(gt=0)
    group_checkpoint: int = Field(gt=0)


class Abort(BaseModel):
    marker_seq: int = Field(gt=0)


def coordination_router(groups: CoordinatedGroups) -> APIRouter:
    router = APIRouter(prefix="/coordination/{group_id}")

    @router.post("/prepare")
    async def prepare(group_id: str, body: Prepare) -> dict[str, Any]:
        entry = await groups.hold(group_id).prepare(body.name, body.tagged)
        return {"marker_seq": entry.seq, "time_ns": entry.time_ns}

    @router.post("/release")
    async def release(group_id: str, body: Release) -> dict[str, Any]:
        return {"sealed": groups.hold(group_id).release(body.marker_seq,
                                                         body.group_checkpoint)}

    @router.post("/abort")
    async def abort(group_id: str, body: Abort) -> dict[str, Any]:
        groups.hold(group_id).abort(body.marker_seq)
        return {"aborted": True}

    return router
