"""The VMs of a protected group: their configuration follows the data; changes are alerted.

Rules and invariants:
- One ``VmWatch`` per protected group with capture sinks; its VMs are the sinks' VMs
  (``SinkVolume.vm_uuid``). It captures each VM's definition (``Hypervisor.definition``:
  libvirt's persistent domain XML without secrets, or the QMP adapter's JSON view) when it
  starts, on the VM's lifecycle events (defined, started, stopped) and every
  ``check_interval_s`` (QMP has no "defined" event; for libvirt it catches what a lost
  connection missed). A definition that differs from the last one captured (a digest)
  goes to the group as a ``VmConfig`` (``ProtectedGroup.set_vm_config``): a VM_CONFIG
  record in the stream, ordered with the writes and checkpoints.
- Problems are reported, never acted on here: a disk the VM has now that no sink of the
  group holds (hot-plugged: ``protect`` True; the site manager adds it to the group as
  ``group update --add-vm`` does, ``seawall.manager.vms.hotplug``), a disk hot-plugged
  that Seawall cannot mirror (``protect`` False: a CD-ROM, a read-only or shareable disk),
  a VM migrated to another host, or one undefined or no longer found. ``status`` lists
  them for the manager's alerts (``vm-change``); nothing replicated is touched (the group
  keeps its history; its mirrors end and its sinks go sync-required as any lost mirror
  does). A problem clears when a check no longer finds it.
- Disks Seawall cannot mirror that the VM had at the watch's first look at it are not
  problems (they were skipped, with a warning, when it was protected).
- The definition is captured again when the group's disks of the VM change too (a disk
  hot-plugged and then protected): the record maps disks to the group's volumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.sink import SinkVolume
from seawall.errors import NotFound, SeawallError
from seawall.hypervisor.base import Hypervisor, HypervisorEvent, VmLifecycle
from seawall.wire.records import VmConfig

log = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL_S = 30.0


class VmWatch:
    def __init__(self, group: ProtectedGroup, hypervisor: Hypervisor,
                 check_interval_s: float = DEFAULT_CHECK_INTERVAL_S) -> None:
        self.group = group
        self.hypervisor = hypervisor
        self.check_interval_s = check_interval_s
        self.format = "qmp-json" if hypervisor.spec.startswith("qmp:") else "libvirt-xml"
        self._digests: dict[str, str] = {}
        self._names: dict[str, str] = {}
        self._skipped: dict[str, set[str]] = {}  # unmirrorable disks at the first look
        self.problems: dict[tuple[str, str], dict[str, Any]] = {}  # (uuid, subject) -> alert
        self._events: asyncio.Queue[HypervisorEvent] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._run())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    @property
    def _disks(self) -> dict[str, dict[str, str]]:
        """VM uuid -> disk target -> the group's volume, as the members are now."""
        disks: dict[str, dict[str, str]] = {}
        for volume in self.group.volumes:
            if isinstance(volume, SinkVolume):
                disks.setdefault(volume.vm_uuid, {})[volume.disk] = volume.name
        return disks

    def status(self) -> list[dict[str, Any]]:
        # A disk protected since the last check is no problem any more (nor to act on).
        held = self._disks
        return [problem for key, problem in sorted(self.problems.items())
                if not (problem["protect"]
                        and key[1].removeprefix("disk ") in held.get(key[0], {}))]

    async def _pump(self) -> None:
        # A queue between the adapter's iterator and the loop: waiting on a queue with a
        # timeout is safe, cancelling an async generator's __anext__ would end it.
        async for event in self.hypervisor.events():
            if isinstance(event, VmLifecycle) and event.vm_uuid in self._disks:
                self._events.put_nowait(event)

    async def _run(self) -> None:
        for vm_uuid in self._disks:
            await self.check(vm_uuid)
        next_check_s = time.monotonic() + self.check_interval_s
        while True:
            try:
                event = await asyncio.wait_for(self._events.get(),
                                               max(0.0, next_check_s - time.monotonic()))
            except TimeoutError:
                for vm_uuid in self._disks:
                    await self.check(vm_uuid)
                next_check_s = time.monotonic() + self.check_interval_s
                continue
            assert isinstance(event, VmLifecycle)
            if event.change == "migrated":
                self._problem(event.vm_uuid, "host", "migrated to another host: its disks "
                              "are no longer captured here (nothing replicated is lost)")
            elif event.change == "undefined":
                self._problem(event.vm_uuid, "defined", "undefined at its hypervisor "
                              "(nothing replicated is lost)")
            else:
                await self.check(event.vm_uuid)

    async def check(self, vm_uuid: str) -> None:
        """Capture the VM's definition if it changed; find its unprotected disks."""
        name = self._names.get(vm_uuid, vm_uuid)
        try:
            info = await self.hypervisor.vm(vm_uuid)
            definition = await self.hypervisor.definition(vm_uuid)
        except NotFound:
            self._problem(vm_uuid, "defined", "no longer found at its hypervisor (deleted, "
                          "undefined, or its QEMU exited); nothing replicated is lost")
            return
        except SeawallError as exc:  # unreachable now: the next check tries again
            log.warning("group %s: cannot read the definition of VM %s: %s",
                        self.group.spec.name, name, exc.message)
            return
        self._names[vm_uuid] = info.name
        for subject in ("defined", "host"):
            self.problems.pop((vm_uuid, subject), None)
        held = self._disks.get(vm_uuid, {})
        skipped = self._skipped.setdefault(
            vm_uuid, {d.target for d in info.disks if d.skip_reason is not None})
        added = {d.target: d.skip_reason for d in info.disks if d.target not in held
                 and not (d.skip_reason is not None and d.target in skipped)}
        for key in [key for key in self.problems
                    if key[0] == vm_uuid and key[1].startswith("disk ")]:
            if key[1].removeprefix("disk ") not in added:
                del self.problems[key]
        for disk, reason in sorted(added.items()):
            if reason is None:
                self._problem(vm_uuid, f"disk {disk}", f"has a disk {disk} the group does not "
                              "protect yet (hot-plugged?): the site manager adds it (as "
                              f"`seawall group update {self.group.spec.name} --add-vm "
                              f"{info.name}` does)", protect=True)
            else:
                self._problem(vm_uuid, f"disk {disk}", f"has a disk {disk} hot-plugged that "
                              f"Seawall cannot mirror ({reason}): it is not protected")
        digest = hashlib.sha256(f"{definition}\n{sorted(held.items())}".encode()).hexdigest()
        if self._digests.get(vm_uuid) == digest:
            return
        self._digests[vm_uuid] = digest
        self.group.set_vm_config(VmConfig(vm_uuid, info.name, self.format, definition,
                                          tuple(sorted(held.items()))))
        log.info("group %s: configuration of VM %s captured (%d bytes)", self.group.spec.name,
                 info.name, len(definition), extra={"group": self.group.spec.name})

    def _problem(self, vm_uuid: str, subject: str, message: str,
                 protect: bool = False) -> None:
        name = self._names.get(vm_uuid, vm_uuid)
        key = (vm_uuid, subject)
        if key not in self.problems:
            log.warning("group %s: VM %s %s", self.group.spec.name, name, message,
                        extra={"group": self.group.spec.name})
        self.problems[key] = {"vm": name, "uuid": vm_uuid, "subject": subject,
                              "message": f"VM {name} {message}", "protect": protect}

