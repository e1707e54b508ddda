"""Control routes of coordinated checkpoints: a group's lead calls them at its members.

Only callers whose certificate the control API pins get here (the site manager, and the
lead agents of the groups this agent is a member of). Routes parse and call
``CoordinatedGroups``; the round itself is ``seawall.agent.protect.coordination``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from seawall.agent.protect.coordination import CoordinatedGroups
from seawall.contract.agent import (
    CoordinationAbort,
    CoordinationAborted,
    CoordinationPrepare,
    CoordinationPrepared,
    CoordinationRelease,
    CoordinationReleased,
)


def coordination_router(groups: CoordinatedGroups) -> APIRouter:
    router = APIRouter(prefix="/coordination/{group_id}")

    @router.post("/prepare", response_model=CoordinationPrepared)
    async def prepare(group_id: str, body: CoordinationPrepare) -> dict[str, Any]:
        entry = await groups.hold(group_id).prepare(body.name, body.tagged, body.quiesce)
        return {"marker_seq": entry.seq, "time_ns": entry.time_ns}

    @router.post("/release", response_model=CoordinationReleased)
    async def release(group_id: str, body: CoordinationRelease) -> dict[str, Any]:
        return {"sealed": groups.hold(group_id).release(body.marker_seq,
                                                         body.group_checkpoint)}

    @router.post("/abort", response_model=CoordinationAborted)
    async def abort(group_id: str, body: CoordinationAbort) -> dict[str, Any]:
        groups.hold(group_id).abort(body.marker_seq)
        return {"aborted": True}

    return router
