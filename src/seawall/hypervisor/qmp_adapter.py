"""``QmpHypervisor``: plain QEMU and Proxmox VE through the QMP sockets of a directory.

Every socket in the directory (Proxmox: ``/var/run/qemu-server/ID.qmp``) is one VM; the
adapter holds one qemu.qmp connection to each, found again by a rescan every
``RESCAN_S``. A QMP monitor takes one client at a time: on Proxmox, give Seawall a QMP
monitor of its own (``args: -qmp unix:/run/seawall-qmp/ID.qmp,server=on,wait=off``) so
that ``qm`` keeps its socket.

Rules and invariants:
- Inventory comes from ``query-name``, ``query-uuid``, ``query-status``, ``query-block``,
  ``query-rx-filter`` and HMP ``info network`` (``seawall.hypervisor.qmp_inventory``). A
  VM started without ``-uuid`` (all zeros) is named by a uuid derived from its socket
  (``socket_uuid``), as is a qemu-storage-daemon (no ``query-uuid``), whose disks are its
  block exports and which counts as running while it answers.
- The splitter of disk D: ``blockdev-add`` of an NBD node ``seawall-sink-D`` on the sink's
  Unix socket, then ``blockdev-mirror`` job ``seawall-D`` from the drive's top node, with
  ``copy-mode: write-blocking``, ``sync: full`` (the initial copy) or ``none``, never
  completed. If the mirror cannot start, the node is deleted again: nothing half-attached.
- ``on-target-error: report``. What QEMU 7.2 (block/mirror.c) does with a guest write in
  write-blocking mode: ``bdrv_mirror_top_do_write`` writes the source first and returns
  *that* result to the guest; only if it succeeded does ``do_sync_target_write`` write the
  target, and a target error there only re-dirties the range in the job's bitmap and
  applies ``on-target-error``: ``report`` sets the job's error, so the job ends
  (``BLOCK_JOB_COMPLETED`` with ``error``) and the guest never sees the sink's failure;
  ``stop`` would pause the job and leave it attached; ``ignore`` would retry the dead sink
  from the bitmap forever. The source is unaffected either way (``on-source-error:
  report`` only concerns the job's own background reads). The NBD node has no
  ``reconnect-delay``, so a sink that died fails the next write at once (the guest write
  that hits it waits for one failed request). A sink that *stalls* with its socket open
  stalls the guest's writes: QEMU 7.2's NBD client has no request timeout, and cancelling
  the job waits for the in-flight request too; ``block-job-cancel`` does not help, closing
  the socket does (the agent's ``seawall.agent.frontend.stall_guard``).
- A job ends as ``MirrorEnded`` once (``BLOCK_JOB_COMPLETED``/``CANCELLED``, or
  ``JOB_STATUS_CHANGE`` to concluded/null, whichever comes first), is ready as
  ``MirrorReady`` once (``BLOCK_JOB_READY``); ``RESUME`` is ``started``, ``SHUTDOWN`` and a
  lost connection (QEMU exited) are ``stopped`` with every mirror of that VM ended; a
  socket that appears (found by the rescan) with its QEMU running is ``started``.
- ``detach_mirror`` force-cancels the job, waits until QEMU dropped it, and deletes the
  NBD node, also one a dead agent left behind (a job that ended by itself keeps it).
- ``events()`` may be iterated by several consumers: each gets every event.
- ``definition`` is the VM's configuration as QMP shows it (``query-version``, ``-block``,
  ``-block-exports``, ``-rx-filter``, HMP ``info network``, the command line), without
  run-time state (status, sizes, dirty bitmaps, our own mirror nodes): it changes only
  when the configuration does (a disk or NIC added, throttling set, ...).
- ``open_reader``/``close_reader``: a read-only NBD export of the disk served by QEMU
  (``seawall.hypervisor.qmp_reader``), for a resync by comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import stat
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from qemu.qmp import ExecuteError, QMPClient, QMPError, Runstate

from seawall.errors import Conflict, InvalidInput, NotFound, PeerError, Unavailable
from seawall.hypervisor import guest_agent, qmp_inventory, qmp_reader
from seawall.hypervisor.base import (
    HypervisorEvent,
    MirrorEnded,
    MirrorReady,
    VmInfo,
    VmLifecycle,
)
from seawall.hypervisor.power import VmShutdown, shut_down

log = logging.getLogger(__name__)

RESCAN_S = 5.0
CONNECT_TIMEOUT_S = 5.0
DETACH_TIMEOUT_S = 10.0
THAW_TIMEOUT_S = 2.0
_NO_UUID = "00000000-0000-0000-0000-000000000000"
_ENDED_STATUSES = ("concluded", "null", "aborting")


_RUNTIME_KEYS = frozenset({"actual-size", "dirty-bitmaps", "dirty-flag", "io-status",
                           "locked", "tray_open"})
"""What ``query-*`` report that changes as the VM runs, not as it is configured: left out
of ``definition`` so that its digest changes only with the configuration."""


def _without_runtime(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_runtime(item) for key, item in value.items()
                if key not in _RUNTIME_KEYS}
    if isinstance(value, list):
        return [_without_runtime(item) for item in value]
    return value


def socket_uuid(path: Path) -> str:
    """The uuid of a VM with none of its own (``-uuid`` not given, a storage daemon)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"qmp:{os.path.realpath(path)}"))


def job_id(disk: str) -> str:
    return "seawall-" + re.sub(r"[^A-Za-z0-9_.-]", "_", disk)


def sink_node(disk: str) -> str:
    return "seawall-sink-" + re.sub(r"[^A-Za-z0-9_.-]", "_", disk)


@dataclass
class _Vm:
    socket_path: Path
    client: QMPClient
    pid: int | None
    uuid: str = ""
    name: str = ""
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> disk, ours only
    ended: set[str] = field(default_factory=set)  # job ids already reported ended
    pump: asyncio.Task[None] | None = None
    daemon: bool = False  # a qemu-storage-daemon: no machine, its disks are its exports

    async def run(self, command: str, arguments: dict[str, Any] | None = None,
                  optional: bool = False) -> Any:
        """``optional``: None if this QEMU has no such command (a storage daemon)."""
        try:
            return await self.client.execute(command, arguments)
        except ExecuteError as exc:
            if optional and exc.error_class == "CommandNotFound":
                return None
            raise PeerError(f"VM {self.name or self.socket_path}: QMP {command} failed: "
                            f"{exc}") from None
        except (QMPError, OSError, EOFError) as exc:
            raise Unavailable(f"VM {self.name or self.socket_path}: QMP {command} failed: "
                            f"{exc}") from None


class _Subscription:
    """One consumer's events; it stops receiving once closed or collected."""

    def __init__(self, subscribers: list[asyncio.Queue[HypervisorEvent]]) -> None:
        self._queue: asyncio.Queue[HypervisorEvent] = asyncio.Queue()
        self._subscribers = subscribers
        subscribers.append(self._queue)

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> HypervisorEvent:
        return await self._queue.get()

    def __del__(self) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(self._queue)


class QmpHypervisor:
    def __init__(self, directory: Path, rescan_s: float = RESCAN_S) -> None:
        self.directory = directory
        self.rescan_s = rescan_s
        self.spec = f"qmp:{directory}"
        self.reads_disks = True
        self.mirrors_new_writes = True
        self._reader_sockets: dict[tuple[str, str], Path] = {}  # open readers' servers
        self._vms: dict[Path, _Vm] = {}
        self._subscribers: list[asyncio.Queue[HypervisorEvent]] = []
        self._rescanner: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- inventory -----------------------------------------------------------------------

    async def list_vms(self) -> list[VmInfo]:
        await self._refresh()
        return [await self._info(vm) for vm in list(self._vms.values())]

    async def vm(self, name_or_uuid: str) -> VmInfo:
        return await self._info(await self._find(name_or_uuid))

    async def definition(self, vm_uuid: str) -> str:
        vm = await self._find(vm_uuid)
        view: dict[str, Any] = {"name": vm.name, "uuid": vm.uuid}
        for command in ("query-version", "query-block", "query-block-exports"):
            view[command] = _without_runtime(await vm.run(command, optional=True))
        # Of a NIC's receive filter only its name and MAC are configuration: the guest's
        # driver sets the rest (promiscuous mode, multicast and VLAN tables, 23 KB a NIC).
        filters = await vm.run("query-rx-filter", optional=True)
        view["query-rx-filter"] = None if filters is None else [
            {key: nic.get(key) for key in ("name", "main-mac")} for nic in filters]
        if not vm.daemon:
            view["info network"] = await vm.run("human-monitor-command",
                                                {"command-line": "info network"})
        if vm.pid is not None:
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{vm.pid}/cmdline").read_bytes()
                view["cmdline"] = [part.decode(errors="replace")
                                   for part in raw.split(b"\0") if part]
        return json.dumps(view, indent=1, sort_keys=True)

    # --- the splitter --------------------------------------------------------------------

    async def attach_mirror(self, vm_uuid: str, disk: str, socket_path: Path,
                            export_name: str, *, full_copy: bool) -> None:
        vm = await self._find(vm_uuid)
        qmp_inventory.check_write_blocking(await vm.run("query-version"), vm.name)
        found = {d.info.target: d for d in await self._disks(vm)}
        if disk not in found:
            raise NotFound(f"VM {vm.name} has no disk {disk!r} (it has "
                           f"{', '.join(sorted(found)) or 'none'})")
        if found[disk].info.skip_reason:
            raise InvalidInput(f"disk {disk} of VM {vm.name} cannot be mirrored: "
                               f"{found[disk].info.skip_reason}")
        job = job_id(disk)
        if disk in await self.mirrored_disks(vm_uuid):
            raise Conflict(f"disk {disk} of VM {vm.name} is already mirrored (job {job})")
        busy = qmp_inventory.busy_with(await vm.run("query-named-block-nodes", {"flat": True}),
                                       found[disk].info.source)
        if busy:
            raise Conflict(f"disk {disk} of VM {vm.name} is busy: {busy} block job of another "
                           "tool runs on it (`query-block-jobs`); QEMU takes one job per "
                           "disk: end it first")
        node = sink_node(disk)
        try:
            await vm.run("blockdev-add", {
                "driver": "nbd", "node-name": node, "export": export_name,
                "server": {"type": "unix", "path": str(socket_path)}})
        except (PeerError, Unavailable) as exc:
            raise PeerError(f"VM {vm.name}: cannot open sink {export_name} on {socket_path} "
                            f"for disk {disk}: {exc}") from None
        vm.jobs[job] = disk
        vm.ended.discard(job)
        try:
            await vm.run("blockdev-mirror", {
                "job-id": job, "device": found[disk].node_name, "target": node,
                "sync": "full" if full_copy else "none", "copy-mode": "write-blocking",
                "on-source-error": "report", "on-target-error": "report"})
        except (PeerError, Unavailable) as exc:
            vm.jobs.pop(job, None)
            with contextlib.suppress(PeerError, Unavailable):
                await vm.run("blockdev-del", {"node-name": node})
            if isinstance(exc, Unavailable):
                raise
            raise InvalidInput(f"VM {vm.name}: QEMU refused to mirror disk {disk}: "
                               f"{exc.message}") from None

    async def detach_mirror(self, vm_uuid: str, disk: str) -> None:
        vm = await self._find(vm_uuid)
        job = job_id(disk)
        if disk in await self.mirrored_disks(vm_uuid):
            with contextlib.suppress(PeerError, Unavailable):  # it may end by itself meanwhile
                await vm.run("block-job-cancel", {"device": job, "force": True})
            deadline_s = asyncio.get_running_loop().time() + DETACH_TIMEOUT_S
            while disk in await self.mirrored_disks(vm_uuid, ending_too=True):
                if asyncio.get_running_loop().time() > deadline_s:
                    raise PeerError(f"VM {vm.name}: the mirror of {disk} did not end within "
                                    f"{DETACH_TIMEOUT_S:g} s of its cancel (a stalled sink?)")
                await asyncio.sleep(0.05)
        nodes = await vm.run("query-named-block-nodes", {"flat": True})
        if any(n.get("node-name") == sink_node(disk) for n in nodes):
            await vm.run("blockdev-del", {"node-name": sink_node(disk)})

    async def mirrored_disks(self, vm_uuid: str, ending_too: bool = False) -> dict[str, bool]:
        vm = await self._find(vm_uuid)
        mirrored: dict[str, bool] = {}
        for job in await vm.run("query-block-jobs"):
            name = str(job.get("device", ""))
            if not name.startswith("seawall-"):
                continue
            if job.get("status") in _ENDED_STATUSES and not ending_too:
                continue
            disk = vm.jobs.get(name) or name.removeprefix("seawall-")
            mirrored[disk] = bool(job.get("ready"))
        return mirrored

    async def open_reader(self, vm_uuid: str, disk: str, socket_dir: Path) -> tuple[Path, str]:
        vm = await self._find(vm_uuid)
        found = {d.info.target: d for d in await self._disks(vm)}
        if disk not in found or not found[disk].node_name:
            raise NotFound(f"VM {vm.name} has no disk {disk!r} to read")
        address = await qmp_reader.open_export(vm.run, vm.name, vm.uuid, disk,
                                               found[disk].node_name, socket_dir)
        self._reader_sockets[(vm.uuid, disk)] = address[0]
        return address

    async def close_reader(self, vm_uuid: str, disk: str) -> None:
        vm = await self._find(vm_uuid)
        await qmp_reader.close_export(vm.run, disk, self._reader_sockets.pop((vm.uuid, disk),
                                                                           None))

    # --- events --------------------------------------------------------------------------

    def events(self) -> AsyncIterator[HypervisorEvent]:
        """Every event from now on (subscribed at this call, not at the first ``anext``)."""
        if self._rescanner is None:
            self._rescanner = asyncio.create_task(self._rescan())
        return _Subscription(self._subscribers)

    def _publish(self, event: HypervisorEvent) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)

    async def _pump(self, vm: _Vm) -> None:
        events = asyncio.ensure_future(self._translate(vm))
        gone = asyncio.ensure_future(self._disconnected(vm))
        try:
            await asyncio.wait([events, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            events.cancel()
            gone.cancel()
        self._vms.pop(vm.socket_path, None)
        for job, disk in vm.jobs.items():
            if job not in vm.ended:
                self._publish(MirrorEnded(vm.uuid, disk, "QEMU's monitor connection ended"))
        self._publish(VmLifecycle(vm.uuid, "stopped"))
        with contextlib.suppress(Exception):
            await vm.client.disconnect()

    @staticmethod
    async def _disconnected(vm: _Vm) -> None:
        while vm.client.runstate == Runstate.RUNNING:
            await vm.client.runstate_changed()

    async def _translate(self, vm: _Vm) -> None:
        async for message in vm.client.events:
            name = str(message.get("event", ""))
            data = cast(dict[str, Any], message.get("data") or {})
            job = str(data.get("device") or data.get("id") or "")
            disk = vm.jobs.get(job)
            if name == "BLOCK_JOB_READY":
                if disk is not None:
                    self._publish(MirrorReady(vm.uuid, disk))
            elif name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") or (
                    name == "JOB_STATUS_CHANGE" and data.get("status") in ("concluded", "null")):
                if disk is not None and job not in vm.ended:
                    vm.ended.add(job)
                    reason = ("cancelled" if name == "BLOCK_JOB_CANCELLED"
                              else str(data.get("error") or "the mirror job ended"))
                    self._publish(MirrorEnded(vm.uuid, disk, reason))
            elif name == "BLOCK_JOB_ERROR" and disk is not None:
                log.warning("VM %s: mirror of %s: %s error (%s)", vm.name, disk,
                            data.get("operation"), data.get("action"))
            elif name == "RESUME":
                self._publish(VmLifecycle(vm.uuid, "started"))
            elif name == "SHUTDOWN":
                self._publish(VmLifecycle(vm.uuid, "stopped"))

    # --- connections ---------------------------------------------------------------------

    async def _rescan(self) -> None:
        while True:
            try:
                await self._refresh()
            except (PeerError, Unavailable) as exc:  # e.g. the directory is not there (yet)
                log.debug("%s", exc.message)
            await asyncio.sleep(self.rescan_s)

    async def _refresh(self) -> None:
        async with self._lock:
            try:
                entries = sorted(self.directory.iterdir())
            except OSError as exc:
                raise PeerError(f"QMP socket directory {self.directory}: {exc}") from None
            for path in entries:
                with contextlib.suppress(OSError):
                    if path in self._vms or not stat.S_ISSOCK(path.stat().st_mode):
                        continue
                vm = await self._connect(path)
                if vm is not None:
                    self._vms[path] = vm

    async def _connect(self, path: Path) -> _Vm | None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        client = QMPClient(path.name)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, str(path)), CONNECT_TIMEOUT_S)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
            pid = struct.unpack("3i", creds)[0] or None
            await asyncio.wait_for(client.connect(sock), CONNECT_TIMEOUT_S)
        except (OSError, QMPError, TimeoutError) as exc:
            sock.close()
            log.warning("QMP socket %s does not answer: %s", path, exc)
            return None
        vm = _Vm(path, client, pid)
        try:
            name = await vm.run("query-name", optional=True)
            vm.daemon = name is None
            vm.name = str((name or {}).get("name") or path.stem)
            vm.uuid = str(((await vm.run("query-uuid", optional=True)) or {}).get("UUID")
                          or _NO_UUID)
        except (PeerError, Unavailable) as exc:
            log.warning("QMP socket %s: %s", path, exc)
            await client.disconnect()
            return None
        if vm.uuid == _NO_UUID:
            vm.uuid = socket_uuid(path)
        vm.pump = asyncio.create_task(self._pump(vm))
        with contextlib.suppress(PeerError, Unavailable):
            if vm.daemon or (await vm.run("query-status")).get("status") == "running":
                self._publish(VmLifecycle(vm.uuid, "started"))  # a QEMU that appeared
        return vm

    async def _find(self, name_or_uuid: str) -> _Vm:
        for attempt in range(2):
            matches = [vm for vm in self._vms.values() if name_or_uuid in (vm.uuid, vm.name)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise Conflict(f"{len(matches)} VMs are named {name_or_uuid!r}: use a uuid")
            if attempt == 0:
                await self._refresh()
        raise NotFound(f"no VM {name_or_uuid!r} among the QMP sockets of {self.directory}")

    async def _disks(self, vm: _Vm) -> list[qmp_inventory.QmpDisk]:
        if vm.daemon:
            return qmp_inventory.export_disks(
                await vm.run("query-block-exports"),
                await vm.run("query-named-block-nodes", {"flat": True}))
        return qmp_inventory.disks(await vm.run("query-block"))

    async def _info(self, vm: _Vm) -> VmInfo:
        disks = tuple(d.info for d in await self._disks(vm))
        problem = qmp_inventory.mirror_problem(await vm.run("query-version"), vm.name)
        if vm.daemon:
            return VmInfo(vm.name, vm.uuid, "running", disks, (), problem)
        status = await vm.run("query-status")
        nics = qmp_inventory.nics(
            await vm.run("query-rx-filter"),
            str(await vm.run("human-monitor-command", {"command-line": "info network"})))
        return VmInfo(vm.name, vm.uuid, qmp_inventory.vm_state(str(status.get("status"))),
                      disks, nics, problem)

    async def freeze(self, vm_uuid: str, timeout_s: float) -> int | None:
        """Through the guest agent's socket beside the QMP one (``ID.qga``)."""
        vm = await self._find(vm_uuid)
        return await guest_agent.freeze(guest_agent.qga_socket_for(vm.socket_path), timeout_s)

    async def thaw(self, vm_uuid: str) -> None:
        vm = await self._find(vm_uuid)
        await guest_agent.thaw(guest_agent.qga_socket_for(vm.socket_path), THAW_TIMEOUT_S)

    async def shutdown_vm(self, vm_uuid: str, timeout_s: float) -> VmShutdown:
        """``system_powerdown`` (ACPI), then ``quit`` at the deadline; a QEMU that exited,
        or whose guest is ``shutdown`` (kept alive by ``-no-shutdown``), is off."""
        vm = await self._find(vm_uuid)
        if vm.daemon:
            raise InvalidInput(f"{vm.name} is a storage daemon: it has no guest to shut down")

        async def ask() -> str:
            await vm.run("system_powerdown")
            return "ACPI"

        async def is_off() -> bool:
            try:
                status = await vm.run("query-status")
            except (Unavailable, PeerError):
                return True  # the QEMU exited with its guest
            return str(status.get("status")) in ("shutdown", "poweroff")

        async def power_off() -> None:
            with contextlib.suppress(Unavailable, PeerError):  # it exits as it answers
                await vm.run("quit")

        return await shut_down(ask, is_off, power_off, timeout_s)

    async def close(self) -> None:
        if self._rescanner is not None:
            self._rescanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rescanner
        for vm in list(self._vms.values()):
            if vm.pump is not None:
                vm.pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await vm.pump
            with contextlib.suppress(Exception):
                await vm.client.disconnect()
        self._vms.clear()
