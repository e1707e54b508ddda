"""Coordinated checkpoints of a group spanning several agents: a two-phase round.

Each member agent protects its own volumes of the group as a protected group of its own
(its own stream, its own journal at the recovery site). A checkpoint of the whole group
is one marker in every member's stream, taken so that it is crash-consistent across them:
a write acknowledged on one agent after a write was acknowledged on another is never in
the checkpoint without that earlier write.

The round, run by the group's lead agent (``Coordinator``):
1. PREPARE at every member (``MemberHold.prepare``): in one step of its event loop the
   member appends its CHECKPOINT marker and closes its ``ReplyGate``, so every write it
   takes from then on is acknowledged only once the gate opens; it answers once every
   write taken *before* the marker has been acknowledged (``ReplyGate.drained``).
2. When every member has answered, RELEASE at every member: a member whose gate is still
   closed for that marker appends a SEAL record naming the marker and the group-wide
   checkpoint id (the lead's marker seq), then opens its gate. A member whose hold timed
   out (``HOLD_TIMEOUT_S``: the lead died or is slow) has opened its gate already; it
   does not seal. Any failure at PREPARE: ABORT at the members that prepared (gates open,
   no seal).

Why this is enough: the recovery site offers checkpoint C of the group only when every
member's marker for C is sealed. A seal proves its member held every acknowledgement
from its marker until after *all* members had their markers in (T). Take w1 acknowledged
on X before w2 on Y, with w2 in C: w2 is before Y's marker, so it was acknowledged before
Y answered PREPARE, before T; w1 was acknowledged earlier still, so before T, and a write
after X's marker is acknowledged only after T: w1 is before X's marker, in C.

Rules:
- One round at a time per group (the lead's lock); a member refuses a PREPARE while it
  holds for another marker.
- A member that is not protecting (syncing, tracking, paused) refuses PREPARE: the round
  is aborted and no checkpoint of the group is taken, as for a one-agent group.
- ``--quiesce``: each member freezes its own VMs' guests before its marker (PREPARE) and
  thaws them at RELEASE, ABORT or its hold's expiry (``HOLD_TIMEOUT_S``, within
  ``quiesce.THAW_AT_S``, whose backstop timer thaws anyway); its marker says whether they
  were all frozen, and the group's checkpoint is application-consistent only if every
  member's marker is.
- Writes are never refused or lost by a round: at worst their acknowledgement waits for
  the hold timeout.
- A member that could not be reached in a round is *suspect*: before the next round the
  lead asks its health (no gate closed) and runs the round only once every suspect answers,
  so a dead or cut-off member host costs the others' writes one round's wait
  (``ROUND_TIMEOUT_S`` at most), not one per checkpoint interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel

from seawall.agent.frontend.reply_gate import ReplyGate
from seawall.agent.protect.checkpoints import LoggedCheckpoint
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.quiesce import Freeze, Quiescer, vms_of
from seawall.agent.protect.sink import ProtectedVolume
from seawall.contract.agent import (
    CoordinationAbort,
    CoordinationAborted,
    CoordinationMember,
    CoordinationPrepare,
    CoordinationPrepared,
    CoordinationRelease,
    CoordinationReleased,
)
from seawall.errors import Conflict, NotFound, NotReady, PeerError, SeawallError, error_from_code

log = logging.getLogger(__name__)
AnswerT = TypeVar("AnswerT", bound=BaseModel)

HOLD_TIMEOUT_S = 5.0
"""Longest a member holds acknowledgements without hearing RELEASE or ABORT."""
ROUND_TIMEOUT_S = 3.0
"""Longest the lead waits for a member's answer (below the hold: a slow round aborts
before any member's hold runs out on its own)."""


class MemberHold:
    """A member's side of the rounds, for one protected group of a spanning group."""

    def __init__(self, group: ProtectedGroup, quiescer: Quiescer) -> None:
        self.group = group
        self.quiescer = quiescer
        self.freeze: Freeze | None = None  # the guests frozen for the held marker
        self._thawing: set[asyncio.Task[None]] = set()
        self.gate = ReplyGate()
        for volume in group.volumes:
            volume.reply_gate = self.gate
        self.held_seq: int | None = None
        self.hold_timeouts = 0
        self._expiry: asyncio.TimerHandle | None = None

    async def prepare(self, name: str, tagged: bool, quiesce: bool = False) -> LoggedCheckpoint:
        if self.held_seq is not None or self.freeze is not None:
            raise Conflict(f"group {self.group.spec.name}: a coordinated checkpoint is being "
                           "taken already")
        consistency = "crash"
        if quiesce:
            self.freeze = await self.quiescer.freeze(vms_of(self.group.volumes))
            consistency = self.freeze.consistency()
        # The marker and the closing of the gate in one step: no write comes between them.
        try:
            entry = self.group.tag_checkpoint(name, tagged, consistency)
        except SeawallError:
            self._thaw()
            raise
        self.gate.close()
        self.held_seq = entry.seq
        self._expiry = asyncio.get_running_loop().call_later(
            HOLD_TIMEOUT_S, self._expire, entry.seq)
        if tagged:
            await self.group.persist_checkpoints()
        await self.gate.drained()
        return entry

    def release(self, marker_seq: int, group_checkpoint: int) -> bool:
        """Seal ``marker_seq`` as ``group_checkpoint`` and open the gate; False if the hold
        of that marker ended already (timed out, aborted) or the group cannot seal it."""
        if self.held_seq != marker_seq:
            return False
        sealed = self.group.seal(marker_seq, group_checkpoint)
        self._open()
        return sealed

    def abort(self, marker_seq: int) -> None:
        if self.held_seq == marker_seq:
            self._open()

    def close(self) -> None:
        """The group stops: let every held acknowledgement go, take no more rounds."""
        self._open()
        for volume in self.group.volumes:
            volume.reply_gate = None

    def _expire(self, marker_seq: int) -> None:
        if self.held_seq == marker_seq:
            self.hold_timeouts += 1
            log.warning("group %s: no word from the lead %.0f s after checkpoint marker %d: "
                        "acknowledging writes again, the checkpoint is not sealed",
                        self.group.spec.name, HOLD_TIMEOUT_S, marker_seq,
                        extra={"group": self.group.spec.name})
            self._open()

    def _open(self) -> None:
        self.held_seq = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.gate.open()
        self._thaw()

    def _thaw(self) -> None:
        freeze, self.freeze = self.freeze, None
        if freeze is not None:
            task = asyncio.get_running_loop().create_task(self.quiescer.thaw(freeze))
            self._thawing.add(task)
            task.add_done_callback(self._thawing.discard)


class Member(Protocol):
    """Another member, as the lead calls it."""

    agent: str

    async def prepare(self, name: str, tagged: bool, quiesce: bool = False) -> int: ...

    async def release(self, marker_seq: int, group_checkpoint: int) -> bool: ...

    async def abort(self, marker_seq: int) -> None: ...

    async def probe(self) -> None:
        """Return if the member answers (PeerError if not); it holds nothing."""

    async def close(self) -> None: ...


class RemoteMember:
    """Another member agent, called on its control API over mutual TLS."""

    def __init__(self, member: CoordinationMember, tls: ssl.SSLContext) -> None:
        self.agent = member.agent
        self._path = f"/coordination/{member.group_id}"
        self._client = httpx.AsyncClient(base_url=member.control_url, verify=tls,
                                         timeout=ROUND_TIMEOUT_S)

    async def prepare(self, name: str, tagged: bool, quiesce: bool = False) -> int:
        prepared = await self._post("prepare", CoordinationPrepare(
            name=name, tagged=tagged, quiesce=quiesce), CoordinationPrepared)
        return prepared.marker_seq

    async def release(self, marker_seq: int, group_checkpoint: int) -> bool:
        released = await self._post("release", CoordinationRelease(
            marker_seq=marker_seq, group_checkpoint=group_checkpoint), CoordinationReleased)
        return released.sealed

    async def abort(self, marker_seq: int) -> None:
        await self._post("abort", CoordinationAbort(marker_seq=marker_seq),
                         CoordinationAborted)

    async def probe(self) -> None:
        try:
            response = await self._client.get("/health")
        except httpx.HTTPError as exc:
            raise PeerError(f"member agent {self.agent} unreachable: "
                            f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise PeerError(f"member agent {self.agent} answered {response.status_code}")

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, action: str, body: BaseModel, answer: type[AnswerT]) -> AnswerT:
        """The member's answer to ``action``, read into its contract model."""
        try:
            response = await self._client.post(f"{self._path}/{action}",
                                               json=body.model_dump(mode="json"))
        except httpx.HTTPError as exc:
            raise PeerError(f"member agent {self.agent} unreachable: "
                            f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()
                raise error_from_code(str(error["code"]), f"member agent {self.agent}: "
                                      f"{error['message']}")
            except (ValueError, KeyError, TypeError):
                raise PeerError(f"member agent {self.agent} answered "
                                f"{response.status_code}") from None
        try:
            return answer.model_validate(response.json())
        except ValueError as exc:  # not JSON, or not the contract's answer
            raise PeerError(f"member agent {self.agent} answered {action} outside the "
                            f"contract: {exc}") from None


class Coordinator:
    """The lead's rounds: on its checkpoint timer and for tagged checkpoints."""

    def __init__(self, local: MemberHold, members: list[Member]) -> None:
        self.local = local
        self.members = members
        self.rounds = 0
        self.failed_rounds = 0
        self.last_error = ""
        self.suspects: set[str] = set()  # agents of members unreachable in the last round
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._timer = asyncio.create_task(self._run_timer())

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        for member in self.members:
            await member.close()

    async def checkpoint(self, name: str, tagged: bool,
                         quiesce: bool = False) -> LoggedCheckpoint:
        """Take one checkpoint of the whole group; its id is the lead's marker seq.

        NotReady (or the member's error) when a member could not take part: nothing is
        offered for the group then."""
        async with self._lock:
            self.rounds += 1
            try:
                entry = await self._round(name, tagged, quiesce)
            except SeawallError as exc:
                self.failed_rounds += 1
                self.last_error = exc.message
                raise
            self.last_error = ""
            return entry

    async def _round(self, name: str, tagged: bool, quiesce: bool) -> LoggedCheckpoint:
        await self._probe_suspects()
        lead = await self.local.prepare(name, tagged, quiesce)
        answers = await asyncio.gather(*(m.prepare(name, tagged, quiesce)
                                         for m in self.members), return_exceptions=True)
        failures = [(m, a) for m, a in zip(self.members, answers, strict=True)
                    if isinstance(a, BaseException)]
        self.suspects = {m.agent for m, a in failures if _unreachable(a)}
        if failures:
            self.local.abort(lead.seq)
            await asyncio.gather(*(m.abort(a) for m, a in zip(self.members, answers, strict=True)
                                   if isinstance(a, int)), return_exceptions=True)
            member, error = failures[0]
            raise _as_seawall_error(error, member.agent)
        markers = [a for a in answers if isinstance(a, int)]
        sealed = [self.local.release(lead.seq, lead.seq), *await asyncio.gather(
            *(m.release(seq, lead.seq) for m, seq in zip(self.members, markers, strict=True)),
            return_exceptions=True)]
        if not all(s is True for s in sealed):
            raise NotReady(f"checkpoint {lead.seq} was not sealed by every member (a hold "
                           "ran out or a member stopped protecting): it is not offered")
        return lead

    async def _probe_suspects(self) -> None:
        suspects = [m for m in self.members if m.agent in self.suspects]
        answers = await asyncio.gather(*(m.probe() for m in suspects), return_exceptions=True)
        for member, answer in zip(suspects, answers, strict=True):
            if isinstance(answer, BaseException):
                raise _as_seawall_error(answer, member.agent)
            self.suspects.discard(member.agent)

    async def _run_timer(self) -> None:
        group = self.local.group
        while True:
            await asyncio.sleep(group.spec.checkpoint_interval_s)
            if not group.protecting or group.spec.fenced:
                continue
            started_s = time.monotonic()
            try:
                await self.checkpoint("", tagged=False)
            except SeawallError as exc:
                log.warning("group %s: coordinated checkpoint failed: %s", group.spec.name,
                            exc.message, extra={"group": group.spec.name})
            else:
                log.debug("group %s: coordinated checkpoint in %.1f ms", group.spec.name,
                          (time.monotonic() - started_s) * 1000)

    def status(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "failed_rounds": self.failed_rounds,
                "last_error": self.last_error, "unreachable": sorted(self.suspects),
                "other_members": [m.agent for m in self.members]}


def _unreachable(error: BaseException) -> bool:
    """No answer at all (as opposed to a refusal, such as a member not protecting)."""
    return isinstance(error, PeerError | TimeoutError | OSError)


def _as_seawall_error(error: BaseException, agent: str) -> SeawallError:
    if isinstance(error, SeawallError):
        return error
    if isinstance(error, TimeoutError):
        return PeerError(f"member agent {agent} did not answer in {ROUND_TIMEOUT_S:g} s")
    return PeerError(f"member agent {agent}: {type(error).__name__}: {error}")


class CoordinatedGroups:
    """The agent's holds (every member group) and coordinators (the groups it leads)."""

    def __init__(self, tls_for: Callable[[str], ssl.SSLContext], quiescer: Quiescer) -> None:
        self._tls_for = tls_for  # a member's certificate -> a client context pinning it
        self.quiescer = quiescer
        self.holds: dict[str, MemberHold] = {}
        self.coordinators: dict[str, Coordinator] = {}

    def add(self, group: ProtectedGroup) -> None:
        coordination = group.spec.coordination
        if coordination is None:
            return
        hold = self.holds[group.spec.group_id] = MemberHold(group, self.quiescer)
        if coordination.lead:
            members: list[Member] = [RemoteMember(m, self._tls_for(m.cert_pem))
                                     for m in coordination.members]
            coordinator = Coordinator(hold, members)
            self.coordinators[group.spec.group_id] = coordinator
            coordinator.start()

    def follow_volumes(self, group_id: str, gone: list[ProtectedVolume]) -> None:
        """The group's members changed: its hold gates exactly its volumes now."""
        hold = self.holds.get(group_id)
        if hold is None:
            return
        for volume in gone:
            volume.reply_gate = None
        for volume in hold.group.volumes:
            volume.reply_gate = hold.gate

    async def remove(self, group_id: str) -> None:
        """The group is no longer protected here: its rounds end, held acks go."""
        coordinator = self.coordinators.pop(group_id, None)
        if coordinator is not None:
            await coordinator.stop()
        hold = self.holds.pop(group_id, None)
        if hold is not None:
            hold.close()

    async def close_all(self) -> None:
        for coordinator in self.coordinators.values():
            await coordinator.stop()
        for hold in self.holds.values():
            hold.close()

    def hold(self, group_id: str) -> MemberHold:
        hold = self.holds.get(group_id)
        if hold is None:
            raise NotFound(f"group {group_id} is not a member of a group spanning agents here")
        return hold

    async def tag(self, group_id: str, name: str,
                  quiesce: bool = False) -> tuple[LoggedCheckpoint, list[str]] | None:
        """A tagged checkpoint of a spanning group (at its lead), with the lead's notes on
        its consistency; None for other groups. The lead's marker says only whether the
        lead's own VMs were frozen: the group's consistency is joined from every member's
        marker at the recovery site (``manager.groups.members.join_checkpoints``)."""
        if group_id not in self.holds:
            return None
        coordinator = self.coordinators.get(group_id)
        if coordinator is None:
            raise Conflict("this agent is a member, not the lead, of the group: its checkpoints "
                           "are taken by the lead agent (ask the site manager)")
        entry = await coordinator.checkpoint(name, tagged=True, quiesce=quiesce)
        return entry, []

    def status(self, group_id: str) -> dict[str, Any] | None:
        hold = self.holds.get(group_id)
        if hold is None:
            return None
        coordinator = self.coordinators.get(group_id)
        return {"lead": coordinator is not None, "holding": hold.held_seq is not None,
                "hold_timeouts": hold.hold_timeouts,
                **(coordinator.status() if coordinator else {})}
