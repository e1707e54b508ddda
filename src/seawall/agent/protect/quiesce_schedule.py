"""Periodic application-consistent checkpoints (``group update --quiesce-every``).

Rules:
- One task per agent looks every ``TICK_S`` at its protected groups; a group whose
  ``quiesce_every_s`` is set gets a quiesced checkpoint (untagged, like the timer's) once
  that long has passed since its last one, or since the setting changed (``due``, pure).
- A one-agent group takes it here (``quiesce.quiesced_checkpoint``); a group spanning
  agents takes it at its lead, as one coordinated round in which every member freezes
  its own VMs; a member that is not the lead takes none itself.
- Only while the group is protecting and not fenced; a failed one is logged and the next
  comes one interval later (the plain checkpoint timer goes on regardless).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from seawall.agent.protect.coordination import CoordinatedGroups
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.quiesce import Quiescer, quiesced_checkpoint
from seawall.errors import SeawallError

log = logging.getLogger(__name__)

TICK_S = 1.0


def due(every_s: float, last: tuple[float, float] | None, now_s: float) -> tuple[bool, float]:
    """Whether a quiesced checkpoint is due now, and the time to count the next one from.

    ``last`` is (the interval then, when the last one was taken or the count started)."""
    if every_s <= 0:
        return False, now_s
    if last is None or last[0] != every_s:
        return False, now_s  # set just now, or changed: a full interval from now
    return now_s - last[1] >= every_s, last[1]


class QuiesceSchedule:
    def __init__(self, groups: Callable[[], list[ProtectedGroup]], quiescer: Quiescer,
                 coordinated: CoordinatedGroups) -> None:
        self._groups = groups
        self._quiescer = quiescer
        self._coordinated = coordinated
        self._last: dict[str, tuple[float, float]] = {}  # group id -> (interval, since)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for group in self._groups():
                now_s = time.monotonic()
                every_s = group.spec.quiesce_every_s
                take, since_s = due(every_s, self._last.get(group.spec.group_id), now_s)
                self._last[group.spec.group_id] = (every_s, now_s if take else since_s)
                if take and group.protecting and not group.spec.fenced:
                    await self._take(group)

    async def _take(self, group: ProtectedGroup) -> None:
        try:
            coordinator = self._coordinated.coordinators.get(group.spec.group_id)
            if coordinator is not None:
                entry = await coordinator.checkpoint("", tagged=False, quiesce=True)
                consistency = entry.consistency
            elif group.spec.coordination is None:
                entry, notes = await quiesced_checkpoint(group, self._quiescer, "",
                                                         tagged=False)
                consistency = "; ".join([entry.consistency, *notes])
            else:
                return  # a member: its lead's rounds freeze its VMs
        except SeawallError as exc:
            log.warning("group %s: periodic quiesced checkpoint failed: %s", group.spec.name,
                        exc.message, extra={"group": group.spec.name})
            return
        log.info("group %s: periodic quiesced checkpoint %d: %s", group.spec.name, entry.seq,
                 consistency, extra={"group": group.spec.name})
