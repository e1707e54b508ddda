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
- A mirror of new writes only on an adapter without ``mirrors_new_writes`` (libvirt: its
  block copy always starts with a full copy) is a full copy into a *discarding* sink
  (``SinkVolume.discarding``: acknowledged, nothing enters the stream; see its rules):
  the attach goes on, polling the job every ``READY_POLL_S``, until the job is ready; then
  the sink captures again and only then is it ``sink_attached`` (so ``reader`` waits for
  it: the comparison reads after the switch). The copy crosses a local Unix socket only.
- ``reader(index)`` is the group's ``mirrors.open_reader``: once the sink's attach is done, a
  read-only NBD export of the disk served by QEMU (``Hypervisor.open_reader``) and an NBD
  client of it (``seawall.nbd.blocking`` in a worker thread: one request at a time, the
  event loop never waits); the export is removed when the sync is done with it. None
  when the sink has no mirror (a read would then miss the writes: nothing to watch).
- Events are checked against the hypervisor's current jobs before they count: a
  ``MirrorEnded`` of a job the splitter replaced itself (detach then attach) arrives after
  the new job exists and is ignored, as is a ``MirrorReady`` of a job since replaced.
- A VM that starts again (``VmLifecycle`` ``started``) gets its lost sinks copied again.
- A VM found shut off (checked at start, on ``stopped``, and when an attach fails), its
  disks held for writing by no process, has its sinks synced from its disk files
  (``mirrors.sink_shut_off``; ``reader`` then gives a ``FileReader``, see
  ``seawall.agent.protect.file_reader``) in a window of their own, and its mirrors' end
  is no loss. When it starts (``started``, or a file read finds the disk open for
  writing and the hypervisor says the VM is no longer shut off) its file readers are
  killed at once, the window is restarted (the plan keeps what was not shipped) and its
  mirrors are attached as for any running VM. A VM that a fence shut down
  (``group.vms_stopping``), or that stops while its group is fenced, is not synced from
  its files: its write-blocking mirrors captured every write it made up to its power-off,
  and the recovery site runs the group now; ``SourceFailover.unfence`` syncs it.
- ``stop(detach=True)`` ends the mirrors first (a clean agent stop or unprotect), so that
  QEMU sees a cancelled job rather than a target that vanished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from seawall.agent.protect.file_reader import (
    DiskFiles,
    DiskInUse,
    UnreadableDisk,
    held_for_writing,
)
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.sink import SinkVolume
from seawall.agent.protect.syncer import DiskReader
from seawall.errors import NotFound, SeawallError
from seawall.hypervisor.base import Hypervisor, MirrorEnded, MirrorReady, VmLifecycle
from seawall.nbd.blocking import NbdClient

log = logging.getLogger(__name__)

READY_POLL_S = 0.25
"""How often a discarded full copy's job is asked whether it is ready (see the rules)."""


class Splitter:
    def __init__(self, group: ProtectedGroup, hypervisor: Hypervisor, socket_path: Path) -> None:
        self.group = group
        self.hypervisor = hypervisor
        self.socket_path = socket_path
        self._attaching: dict[int, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self.files = DiskFiles(socket_path.parent)

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
        self._checker = asyncio.create_task(self._check_vms())

    async def stop(self, detach: bool) -> None:
        self.group.mirrors.on_copy_needed = None
        self.group.mirrors.open_reader = None
        tasks = [*self._attaching.values(),
                 *[task for task in (self._watcher, self._checker) if task is not None]]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._attaching.clear()
        if detach:
            await self.detach([sink for index, sink in self._sinks.items()
                               if index not in self.group.mirrors.offline])

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
        discard = not full_copy and not self.hypervisor.mirrors_new_writes
        sink.discarding = discard  # before the job exists: its first write is the copy's
        try:
            await self.hypervisor.detach_mirror(sink.vm_uuid, sink.disk)
            await self.hypervisor.attach_mirror(sink.vm_uuid, sink.disk, self.socket_path,
                                                sink.name, full_copy=full_copy or discard)
            if discard and not await self._copied(sink):
                self.group.mirrors.sink_lost(index, "its job ended during its full copy")
                return
        except SeawallError as exc:
            if not await self._shut_off(sink.vm_uuid):
                self.group.mirrors.sink_lost(index, f"cannot attach: {exc.message}", exc.code)
            return
        sink.discarding = False  # every write from now on is captured: see the rules
        self.group.mirrors.sink_attached(index)
        log.info("group %s: mirror of %s (VM %s, %s) attached, %s", self.group.spec.name,
                 sink.name, sink.vm_uuid, sink.disk,
                 "full copy running" if full_copy else
                 "full copy discarded, disk compared" if discard else
                 "new writes only, disk compared",
                 extra={"group": self.group.spec.name})

    async def _copied(self, sink: SinkVolume) -> bool:
        """Until the job of ``sink`` is ready (True) or gone (False)."""
        while True:
            jobs = await self.hypervisor.mirrored_disks(sink.vm_uuid)
            if sink.disk not in jobs:
                return False
            if jobs[sink.disk]:
                return True
            await asyncio.sleep(READY_POLL_S)

    @contextlib.asynccontextmanager
    async def reader(self, index: int) -> AsyncIterator[DiskReader | None]:
        """The group's ``mirrors.open_reader``: sink ``index``'s disk, read through QEMU."""
        attaching = self._attaching.get(index)
        if attaching is not None:
            await asyncio.wait([attaching])
        sink = self._sinks[index]
        if index in self.group.mirrors.offline:
            async with self._file_reader(index, sink) as reader:
                yield reader
            return
        if index not in self.group.mirrors.running or not self.hypervisor.reads_disks:
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

    @contextlib.asynccontextmanager
    async def _file_reader(self, index: int,
                           sink: SinkVolume) -> AsyncIterator[DiskReader | None]:
        """Sink ``index``'s disk read from its file (its VM is shut off); None, and the
        sink lost, if that file cannot be read."""
        try:
            info = await self.hypervisor.vm(sink.vm_uuid)
            disk = next((d for d in info.disks if d.target == sink.disk), None)
            if disk is None:
                raise NotFound(f"VM {info.name} has no disk {sink.disk} any more")
            reader = await self.files.open(sink.vm_uuid, disk)
        except (NotFound, UnreadableDisk) as exc:
            self.group.mirrors.sink_lost(index, f"VM shut off, its disk not readable from "
                                                f"its file: {exc.message}")
            yield None
            return
        except DiskInUse:
            await self._in_use(sink)
            raise
        try:
            yield reader
        except DiskInUse:
            await self._in_use(sink)
            raise
        finally:
            await self.files.close(reader)

    async def _in_use(self, sink: SinkVolume) -> None:
        """A file read found the disk open for writing: if the VM runs, it started (the
        event may not be here yet); that cancels this sync and attaches the mirrors.
        Otherwise something else writes the file: the sync fails and is retried."""
        if (await self.hypervisor.vm(sink.vm_uuid)).state != "shut off":
            self._started(sink.vm_uuid)
            await asyncio.sleep(0)  # the cancellation of this sync lands here

    async def _check_vms(self) -> None:
        """At start: which VMs of the group are shut off (read from their files)."""
        for vm_uuid in sorted({sink.vm_uuid for sink in self._sinks.values()}):
            await self._shut_off(vm_uuid)

    async def _shut_off(self, vm_uuid: str) -> bool:
        """True if ``vm_uuid`` is shut off and no process holds its disks for writing (a
        QEMU kept alive after its guest shut down still does: its mirror goes on); its
        sinks are then read from its files."""
        try:
            info = await self.hypervisor.vm(vm_uuid)
        except SeawallError:  # a QEMU that exited (QMP), an undefined VM, no hypervisor:
            return False  # nothing to read; an attach that fails says why
        if info.state != "shut off" or any(held_for_writing(disk.source)
                                           for disk in info.disks if disk.skip_reason is None):
            return False
        mirrors = self.group.mirrors
        off = [i for i, sink in self._sinks.items()
               if sink.vm_uuid == vm_uuid and i not in mirrors.offline]
        for index in off:
            mirrors.sink_shut_off(index)
        if off and (self.group.vms_stopping or self.group.spec.fenced):
            log.info("group %s: VM %s is shut off for a failover: its mirrors captured "
                     "its every write", self.group.spec.name, vm_uuid,
                     extra={"group": self.group.spec.name})
        elif off:
            log.info("group %s: VM %s is shut off: its disks are synced from their files",
                     self.group.spec.name, vm_uuid, extra={"group": self.group.spec.name})
            self.group.copy_sinks(off, "VM shut off: read from its disk files")
        return True

    def _started(self, vm_uuid: str) -> None:
        """``vm_uuid`` runs: no file of it is read any more; its sinks get mirrors."""
        self.files.stop(vm_uuid)  # at once: a disk being written is not read from outside
        mirrors = self.group.mirrors
        again = [i for i, sink in self._sinks.items() if sink.vm_uuid == vm_uuid
                 and (i in mirrors.lost or i in mirrors.offline)]
        for index in again:
            mirrors.sink_started(index)
        if again:
            self.group.copy_sinks(again, "VM started")

    async def _watch(self) -> None:
        async for event in self.hypervisor.events():
            try:
                await self._on_event(event)
            except SeawallError as exc:  # the hypervisor went away while we asked
                log.warning("group %s: %s", self.group.spec.name, exc.message)

    async def _on_event(self, event: MirrorReady | MirrorEnded | VmLifecycle) -> None:
        if isinstance(event, VmLifecycle):
            if event.change == "started":
                self._started(event.vm_uuid)
            elif event.change == "stopped":
                await self._shut_off(event.vm_uuid)
            return
        index = self._by_disk.get((event.vm_uuid, event.disk))
        if index is None or index in self.group.mirrors.offline:
            return  # a shut-off VM's mirror ended with it: its files are read now
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
