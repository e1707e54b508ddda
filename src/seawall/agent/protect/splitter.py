"""The splitter of a protection group: QEMU's write-blocking mirrors into its capture sinks.

Rules and invariants:
- One ``Splitter`` per protected group with sinks, given the hypervisor adapter
  (``seawall.hypervisor.base.Hypervisor``); it is the group's ``mirrors.on_copy_needed``.
- The group decides when a sink needs a new mirror and whether with a full copy (a first
  sync) or of new writes only (``SinkMirrors.to_attach``); the splitter then
  detaches any mirror of that disk, attaches the new one and tells the group
  (``mirrors.sink_attached``). Its ``MirrorReady`` closes the sink's part of the window
  (``group.mirrors.sink_ready``); ``MirrorEnded`` or an attach that fails makes the group
  ``sync-required`` (``group.mirrors.sink_lost``). The VM is never touched beyond attaching and
  detaching the mirror and a read-only export: whatever happens, it keeps its disk.
- ``reader(index)`` is the group's ``mirrors.open_reader``: once the sink's attach is done, a
  read-only NBD export of the disk served by QEMU (``Hypervisor.open_reader``) and an NBD
  client of it (``seawall.nbd.blocking`` in a worker thread: one request at a time, the
  event loop never waits); the export is removed when the sync is done with it. None
  when the sink has no mirror (a read would then miss the writes: nothing to watch).
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
from collections.abc import AsyncIterator
from pathlib import Path

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.sink import SinkVolume
from seawall.agent.protect.syncer import DiskReader
from seawall.errors import SeawallError
from seawall.hypervisor.base import Hypervisor, MirrorEnded, MirrorReady, VmLifecycle
from seawall.nbd.blocking import NbdClient

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
        self.group.mirrors.on_copy_needed = self.copy
        self.group.mirrors.open_reader = self.reader
        self.group.mirrors.readable = self.hypervisor.reads_disks
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self, detach: bool) -> None:
        self.group.mirrors.on_copy_needed = None
        self.group.mirrors.open_reader = None
        tasks = [*self._attaching.values(), *([self._watcher] if self._watcher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._attaching.clear()
        if detach:
            await self.detach(list(self._sinks.values()))

    def copy(self, sinks: dict[int, bool]) -> None:
        """``SinkMirrors.on_copy_needed``: (re)attach these sinks' mirrors, each with a
        full copy or of new writes only."""
        for index, full_copy in sinks.items():
            previous = self._attaching.pop(index, None)
            if previous is not None:
                previous.cancel()
            task = asyncio.create_task(self._attach(index, full_copy, previous))
            self._attaching[index] = task
            task.add_done_callback(self._attached)

    def _attached(self, task: asyncio.Task[None]) -> None:
        for index, attaching in list(self._attaching.items()):
            if attaching is task:
                del self._attaching[index]

    async def _attach(self, index: int, full_copy: bool,
                      previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await previous
        sink = self._sinks[index]
        try:
            await self.hypervisor.detach_mirror(sink.vm_uuid, sink.disk)
            await self.hypervisor.attach_mirror(sink.vm_uuid, sink.disk, self.socket_path,
                                                sink.name, full_copy=full_copy)
        except SeawallError as exc:
            self.group.mirrors.sink_lost(index, f"cannot attach: {exc.message}", exc.code)
            return
        self.group.mirrors.sink_attached(index)
        log.info("group %s: mirror of %s (VM %s, %s) attached, %s", self.group.spec.name,
                 sink.name, sink.vm_uuid, sink.disk,
                 "full copy running" if full_copy else "new writes only, disk compared",
                 extra={"group": self.group.spec.name})

    @contextlib.asynccontextmanager
    async def reader(self, index: int) -> AsyncIterator[DiskReader | None]:
        """The group's ``mirrors.open_reader``: sink ``index``'s disk, read through QEMU."""
        attaching = self._attaching.get(index)
        if attaching is not None:
            await asyncio.wait([attaching])
        sink = self._sinks[index]
        if index not in self.group.mirrors.running:
            yield None
            return
        socket_path, export = await self.hypervisor.open_reader(sink.vm_uuid, sink.disk,
                                                                self.socket_path.parent)
        try:
            client = NbdClient(str(socket_path), export)
            await asyncio.to_thread(client.connect)
            try:
                yield _ThreadedReader(client)
            finally:
                await asyncio.to_thread(client.close)
        finally:
            try:
                await self.hypervisor.close_reader(sink.vm_uuid, sink.disk)
            except SeawallError as exc:
                log.warning("group %s: cannot remove the read export of %s: %s",
                            self.group.spec.name, sink.name, exc.message)

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
                        if sink.vm_uuid == event.vm_uuid and i in self.group.mirrors.lost]
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
                self.group.mirrors.sink_ready(index)
        elif event.disk not in jobs:
            self.group.mirrors.sink_lost(index, event.reason)


class _ThreadedReader:
    """A blocking NBD client's reads, each in a worker thread (one at a time)."""

    def __init__(self, client: NbdClient) -> None:
        self._client = client

    async def read(self, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self._client.read, offset, length)
