"""Application-consistent checkpoints: a group's guests frozen around the marker.

``--quiesce`` freezes the file systems of every VM of the group through its guest agent
(``Hypervisor.freeze``), appends the CHECKPOINT marker, and thaws them. A VM whose guest
agent does not answer within ``AGENT_TIMEOUT_S`` is not frozen: the checkpoint is then
crash-consistent, marked so, with a note naming the VM.

Rules and invariants (a guest never stays frozen more than ``FREEZE_LIMIT_S``):
- Freezes of all the group's VMs are asked at once; the freeze clock starts when they are
  asked (a freeze that timed out may still happen in the guest, so every VM *asked* is
  thawed, whatever it answered).
- Thaw in a ``finally`` (single-agent groups) or at RELEASE/ABORT/hold expiry (a member of
  a group spanning agents, ``coordination.MemberHold``), AND a backstop timer on a thread
  of its own, ``THAW_AT_S`` after the freezes were asked: it thaws even when the agent's
  event loop is stalled (it runs its own loop). ``THAW_AT_S + THAW_TIMEOUT_S`` stays within
  ``FREEZE_LIMIT_S``.
- Once the backstop fired, the freeze is *expired*: a marker appended after that is
  crash-consistent. The check and the append are one step of the event loop, and every
  guest write reaches the stream through that loop, so no write made after a thaw can
  come before a marker marked application-consistent.
- The agent dying while guests are frozen (qemu-ga has no auto-thaw on Linux): the VMs
  are recorded (``frozen.json``, atomic write) *before* the freezes are asked, and removed
  once thawed; the agent's next start thaws every VM recorded (``Quiescer.recover``). A
  stalled agent is killed by its watchdog (``seawall.agent.watchdog``) and restarted, so
  the backstop thread and the restart cover both deaths and stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from seawall.atomic import atomic_write
from seawall.errors import SeawallError
from seawall.hypervisor.base import Hypervisor

if TYPE_CHECKING:
    from seawall.agent.protect.checkpoints import LoggedCheckpoint
    from seawall.agent.protect.group import ProtectedGroup

log = logging.getLogger(__name__)

FREEZE_LIMIT_S = 10.0
"""Longest a guest may stay frozen, whatever fails."""
AGENT_TIMEOUT_S = 2.0
"""Longest a freeze waits for a guest agent's answer (then: no agent, crash-consistent)."""
THAW_TIMEOUT_S = 2.0
"""How long a thaw may take to reach the guest (libvirt's agent timeout for it)."""
THAW_AT_S = 7.0
"""The backstop timer: thaw this long after the freezes were asked."""


def vms_of(volumes: Iterable[object]) -> list[str]:
    """The VMs a group's volumes belong to: the ``vm_uuid`` of its capture sinks."""
    found = {getattr(volume, "vm_uuid", None) for volume in volumes}
    return sorted(uuid for uuid in found if isinstance(uuid, str) and uuid)


def consistency_of(frozen: dict[str, int | None], expired: bool) -> str:
    """``application`` only if the group has VMs, every one's guest agent froze it, and
    the backstop has not thawed them yet; else ``crash``."""
    if not frozen or expired or any(count is None for count in frozen.values()):
        return "crash"
    return "application"


def notes_of(frozen: dict[str, int | None], expired: bool) -> list[str]:
    """Why a quiesced checkpoint is only crash-consistent, for the operator."""
    if not frozen:
        return ["the group has no VMs to freeze: crash-consistent"]
    notes = [f"VM {uuid}: no guest agent answered in {AGENT_TIMEOUT_S:g} s: crash-consistent"
             for uuid, count in sorted(frozen.items()) if count is None]
    if expired:
        notes.append(f"the guests were thawed by the {THAW_AT_S:g} s timer before the "
                     "marker: crash-consistent")
    return notes


@dataclass
class Freeze:
    """One freeze of a set of VMs, from the asking until the thaw."""

    vms: list[str]
    started_s: float  # time.monotonic() when the freezes were asked
    frozen: dict[str, int | None] = field(default_factory=dict)
    expired: threading.Event = field(default_factory=threading.Event)
    thawed: bool = False
    timer: threading.Timer | None = None

    def consistency(self) -> str:
        return consistency_of(self.frozen, self.expired.is_set())

    def notes(self) -> list[str]:
        return notes_of(self.frozen, self.expired.is_set())

    def frozen_s(self) -> float:
        return time.monotonic() - self.started_s


class Quiescer:
    """The agent's freezes and thaws of its VMs' guests (one per agent)."""

    def __init__(self, hypervisor: Hypervisor | None, record_path: Path) -> None:
        self.hypervisor = hypervisor
        self.record_path = record_path
        self._lock = threading.Lock()  # the record, between the loop and the timer thread
        self._open: list[Freeze] = []

    async def recover(self) -> list[str]:
        """At start: thaw the VMs an earlier agent process froze and never thawed."""
        if not self.record_path.exists():
            return []
        try:
            vms = [str(uuid) for uuid in json.loads(self.record_path.read_text())]
        except (ValueError, TypeError):
            vms = []
        if vms:
            log.warning("thawing VMs an earlier agent froze and did not thaw: %s",
                        ", ".join(vms))
            await self._thaw_all(vms)
        self.record_path.unlink(missing_ok=True)
        return vms

    async def freeze(self, vms: list[str]) -> Freeze:
        """Freeze every VM of ``vms`` (recorded first; the backstop timer armed)."""
        freeze = Freeze(list(vms), time.monotonic())
        if self.hypervisor is None or not vms:
            freeze.thawed = True
            return freeze
        self._open.append(freeze)
        self._write_record()
        freeze.timer = threading.Timer(THAW_AT_S, self._backstop, (freeze,))
        freeze.timer.daemon = True
        freeze.timer.start()
        answers = await asyncio.gather(*(self._freeze_one(uuid) for uuid in vms))
        freeze.frozen = dict(zip(vms, answers, strict=True))
        return freeze

    async def thaw(self, freeze: Freeze) -> None:
        if freeze.thawed:
            return
        if freeze.timer is not None:
            freeze.timer.cancel()
        await self._thaw_all(freeze.vms)
        self._done(freeze)
        log.info("VMs %s thawed after %.2f s", ", ".join(freeze.vms), freeze.frozen_s())

    @contextlib.asynccontextmanager
    async def frozen(self, vms: list[str]) -> AsyncIterator[Freeze]:
        freeze = await self.freeze(vms)
        try:
            yield freeze
        finally:
            await self.thaw(freeze)

    async def _freeze_one(self, uuid: str) -> int | None:
        assert self.hypervisor is not None
        try:
            return await self.hypervisor.freeze(uuid, AGENT_TIMEOUT_S)
        except SeawallError as exc:
            log.warning("VM %s: freeze failed: %s", uuid, exc.message)
            return None

    async def _thaw_all(self, vms: list[str]) -> None:
        if self.hypervisor is None:
            return
        hypervisor = self.hypervisor

        async def one(uuid: str) -> None:
            try:
                await asyncio.wait_for(hypervisor.thaw(uuid), THAW_TIMEOUT_S + 1)
            except (SeawallError, TimeoutError) as exc:
                log.warning("VM %s: thaw failed: %s", uuid, exc)

        await asyncio.gather(*(one(uuid) for uuid in vms))

    def _backstop(self, freeze: Freeze) -> None:
        """On the timer's thread: thaw with a loop of its own (the agent's may be stalled)."""
        freeze.expired.set()
        log.warning("VMs %s still frozen %.1f s after the freeze: thawing them now",
                    ", ".join(freeze.vms), freeze.frozen_s())
        asyncio.run(self._thaw_all(freeze.vms))
        self._done(freeze)

    def _done(self, freeze: Freeze) -> None:
        with self._lock:
            freeze.thawed = True
            if freeze in self._open:
                self._open.remove(freeze)
            self._write_record_locked()

    def _write_record(self) -> None:
        with self._lock:
            self._write_record_locked()

    def _write_record_locked(self) -> None:
        vms = sorted({uuid for freeze in self._open for uuid in freeze.vms})
        if vms:
            atomic_write(self.record_path, json.dumps(vms).encode())
        else:
            self.record_path.unlink(missing_ok=True)


async def quiesced_checkpoint(group: ProtectedGroup, quiescer: Quiescer, name: str,
                              tagged: bool = True) -> tuple[LoggedCheckpoint, list[str]]:
    """A checkpoint of a one-agent group with its guests frozen around the marker; the
    notes say why it is only crash-consistent, when it is."""
    async with quiescer.frozen(vms_of(group.volumes)) as freeze:
        entry = group.tag_checkpoint(name, tagged, freeze.consistency())
    if tagged:
        await group.persist_checkpoints()
    return entry, freeze.notes() if entry.consistency == "crash" else []

