"""The splitter of a protection group: QEMU's write-blocking mirrors into its capture sinks.

Rules and invariants:
- One ``Splitter`` per protected group with sinks, given the hypervisor adapter
  (``seawall.hypervisor.base.Hypervisor``); it is the group's ``on_copy_needed``.
- The group decides when a sink needs a full copy (every sync window: the sink cannot be
  read, so the mirror's own full copy is the sync); the splitter then detaches any mirror
  of that disk and attaches a new one with ``full_copy=True``. Its ``MirrorReady`` closes
  the sink's part of the window (``group.sink_ready``); ``MirrorEnded`` or an attach that
  fails makes the group ``sync-required`` (``group.sink_lost``). The VM is never touched
  beyond attaching and detaching the mirror: whatever happens, it keeps its disk.
- Events are checked against the hypervisor's current jobs before they count: a
  ``MirrorEnded`` of a job the splitter replaced itself (detach then attach) arrives after
  the new job exists and is ignored, as is a ``MirrorReady`` of a job since replaced.
- A VM that starts again (``VmLifecycle`` ``started``) gets its lost sinks copied again.
- ``stop(detach=True)`` ends the mirrors first (a clean agent stop or unprotect), so that
  QEMU sees a cancelled job rather than a target that vanished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.sink import SinkVolume
from seawall.errors import SeawallError
from seawall.hypervisor.base import Hypervisor, MirrorEnded, MirrorReady, VmLifecycle

log = logging.getLogger(__name__)


class Splitter:
    def __init__(self, group: ProtectedGroup, hypervisor: Hypervisor, socket_path: Path) -> None:
        self.group = group
        self.hypervisor = hypervisor
        self.socket_path = socket_path
        self._attaching: dict[int, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None

    @property
    def _sinks(self) -> dict[int, SinkVolume]:
        # Read from the group each time: its members change in place (change_volumes).
        return {i: volume for i, volume in enumerate(self.group.volumes)
                if isinstance(volume, SinkVolume)}

    @property
    def _by_disk(self) -> dict[tuple[str, str], int]:
        return {(sink.vm_uuid, sink.disk): i for i, sink in self._sinks.items()}

    async def detach(self, sinks: list[SinkVolume]) -> None:
        """End the mirrors of sinks that left the group (the VM keeps running, untouched)."""
        for sink in sinks:
            try:
                await self.hypervisor.detach_mirror(sink.vm_uuid, sink.disk)
            except SeawallError as exc:
                log.warning("group %s: cannot detach the mirror of %s: %s",
                            self.group.spec.name, sink.name, exc.message)

    def start(self) -> None:
        self.group.on_copy_needed = self.copy
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self, detach: bool) -> None:
        self.group.on_copy_needed = None
        tasks = [*self._attaching.values(), *([self._watcher] if self._watcher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._attaching.clear()
        if detach:
            await self.detach(list(self._sinks.values()))

    def copy(self, sinks: list[int]) -> None:
        """``ProtectedGroup.on_copy_needed``: (re)attach these sinks' mirrors, full copy."""
        for index in sinks:
            previous = self._attaching.pop(index, None)
            if previous is not None:
                previous.cancel()
            task = asyncio.create_task(self._attach(index, previous))
            self._attaching[index] = task
            task.add_done_callback(self._attached)

    def _attached(self, task: asyncio.Task[None]) -> None:
        for index, attaching in list(self._attaching.items()):
            if attaching is task:
                del self._attaching[index]

    async def _attach(self, index: int, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        sink = self._sinks[index]
        try:
            await self.hypervisor.detach_mirror(sink.vm_uuid, sink.disk)
            await self.hypervisor.attach_mirror(sink.vm_uuid, sink.disk, self.socket_path,
                                                sink.name, full_copy=True)
        except SeawallError as exc:
            self.group.sink_lost(index, f"cannot attach: {exc.message}")
            return
        log.info("group %s: mirror of %s (VM %s, %s) attached, full copy running",
                 self.group.spec.name, sink.name, sink.vm_uuid, sink.disk,
                 extra={"group": self.group.spec.name})

    async def _watch(self) -> None:
        async for event in self.hypervisor.events():
            try:
                await self._on_event(event)
            except SeawallError as exc:  # the hypervisor went away while we asked
                log.warning("group %s: %s", self.group.spec.name, exc.message)

    async def _on_event(self, event: MirrorReady | MirrorEnded | VmLifecycle) -> None:
        if isinstance(event, VmLifecycle):
            if event.change == "started":
                lost = [i for i, sink in self._sinks.items()
                        if sink.vm_uuid == event.vm_uuid and i in self.group.mirrors_lost]
                if lost:
                    self.group.copy_sinks(lost)
            return
        index = self._by_disk.get((event.vm_uuid, event.disk))
        if index is None:
            return
        attaching = self._attaching.get(index)
        if attaching is not None:  # the event may be of the job it replaces: judge after
            await asyncio.wait([attaching])
        try:
            jobs = await self.hypervisor.mirrored_disks(event.vm_uuid)
        except SeawallError:
            jobs = {}  # the VM is gone with its jobs
        if isinstance(event, MirrorReady):
            if jobs.get(event.disk):
                self.group.sink_ready(index)
        elif event.disk not in jobs:
            self.group.sink_lost(index, event.reason)
