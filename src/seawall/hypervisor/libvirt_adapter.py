"""``LibvirtHypervisor``: the ``Hypervisor`` of a host whose VMs libvirt runs (libvirt-python).

Rules and invariants:
- Every libvirt call blocks, so each runs in ``asyncio.to_thread``; one ``virConnect`` is
  shared by those threads (libvirt's connections are thread-safe).
- Events: libvirt's default event loop implementation runs on one daemon thread for the
  whole process (libvirt allows one, registered before the first connection); keepalives
  and the domain callbacks run there and are handed to the asyncio loop that opened the
  adapter (``call_soon_threadsafe``), into one queue per ``events()`` consumer.
- The connection is checked before each call (``isAlive``, kept honest by keepalives):
  a lost one is opened again, its callbacks registered again; if libvirtd does not
  answer, ``Unavailable`` names the URI. A connection libvirtd drops (restarted, or
  disconnected us) is also opened again by itself, every ``RECONNECT_INTERVAL_S``, so
  events resume with no call made. Events that happened while no connection was open
  are lost: a consumer compares ``mirrored_disks`` after an outage.
- The splitter is ``virDomainBlockCopy`` onto the sink (``mirror_target_xml``) with the
  synchronous-writes (QEMU's write-blocking copy mode), transient-job and reuse-external
  flags: libvirt >= 8.0 and QEMU >= 3.0, checked at open (inventory works without).
  The job is never pivoted: ``detach_mirror`` aborts it, the VM keeps its own disk.
  libvirt's block copy always starts with a full copy; ``full_copy=False`` (QEMU's
  ``sync: none``) cannot be asked of it and is refused.
- ``freeze``/``thaw`` are ``virDomainFSFreeze``/``virDomainFSThaw`` (libvirt asks the guest
  agent on the domain's ``org.qemu.guest_agent.0`` channel), with the domain's agent
  response timeout set first (``agentSetResponseTimeout``, whole seconds, at least 1): a
  missing, unconfigured or silent agent is None, not an error.
- A resync compares (``reads_disks``), with two parts libvirt has no plain call for.
  A mirror of new writes only (``mirrors_new_writes`` False): the block copy's full copy
  goes into a sink that discards it until the job is ready, then captures (the
  ``Splitter``; why that is a mirror of new writes from the switch on:
  ``seawall.agent.protect.sink``); the copy crosses a local socket, not the WAN. A read
  of the live disk through QEMU: ``open_reader`` is QEMU's own read-only NBD export
  through libvirt's QMP passthrough (``seawall.hypervisor.libvirt_reader``: a pull-mode
  backup is refused beside a block copy; the passthrough taints the domain).
- ``definition`` is the persistent domain XML (``INACTIVE | MIGRATABLE``, no ``SECURE``):
  what another host can define, with no passwords in it (libvirt 9.0 puts a console's
  password in that XML even so: ``libvirt_xml.without_secrets`` takes it out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import libvirt

from seawall.errors import Conflict, InvalidInput, NotFound, SeawallError, Unavailable
from seawall.hypervisor import libvirt_reader, qmp_reader
from seawall.hypervisor.base import (
    HypervisorEvent,
    MirrorEnded,
    MirrorReady,
    VmInfo,
    VmLifecycle,
)
from seawall.hypervisor.libvirt_inventory import STATES, disk_entry, find_domain, vm_info
from seawall.hypervisor.libvirt_xml import (
    mirror_target_xml,
    mirrors_ready,
    parse_domain,
    without_secrets,
)
from seawall.hypervisor.power import VmShutdown, shut_down

log = logging.getLogger(__name__)

T = TypeVar("T")
LifecycleChange = Literal["started", "stopped", "defined", "undefined", "migrated"]

MIN_LIBVIRT_VERSION = 8_000_000  # 8.0.0: VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES
MIN_QEMU_VERSION = 3_000_000  # 3.0.0: blockdev-mirror copy-mode write-blocking
KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 5, 3  # a dead libvirtd is noticed within ~20 s
RECONNECT_INTERVAL_S = 2.0

_JOB_END = {libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED: "completed",
            libvirt.VIR_DOMAIN_BLOCK_JOB_FAILED: "failed",
            libvirt.VIR_DOMAIN_BLOCK_JOB_CANCELED: "cancelled"}
_UNAVAILABLE_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC,
                      libvirt.VIR_ERR_AUTH_FAILED}
_UNSUPPORTED_CODES = {libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                      libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_OPERATION_UNSUPPORTED}

_NO_AGENT_CODES = {libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED,
                   libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_ERR_OPERATION_INVALID,
                   libvirt.VIR_ERR_OPERATION_TIMEOUT}
"""What libvirt says when a guest has no agent answering: not configured (no channel),
not connected (qemu-ga not started yet), not responding or too slow, VM not running."""
THAW_TIMEOUT_S = 2

_event_thread_lock = threading.Lock()
_event_thread: list[threading.Thread] = []  # the one thread running libvirt's event loop


def _start_event_thread() -> None:
    """Register libvirt's default event loop and run it on a daemon thread, once."""
    with _event_thread_lock:
        if _event_thread:
            return
        libvirt.registerErrorHandler(lambda _context, _error: None, None)  # we raise them
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        thread.start()
        _event_thread.append(thread)


class LibvirtHypervisor:
    """The VMs of one libvirt connection (``qemu:///system`` by default)."""

    def __init__(self, uri: str, loop: asyncio.AbstractEventLoop) -> None:
        self.uri = uri
        self.spec = f"libvirt:{uri}"
        self.reads_disks = True  # through QMP passthrough: see libvirt_reader
        self.mirrors_new_writes = False  # a block copy starts with a full copy
        self._reader_sockets: dict[tuple[str, str], Path] = {}  # open readers' servers
        self._loop = loop
        self._lock = threading.Lock()
        self._connection: Any = None  # libvirt.virConnect, when open
        self._callbacks: list[int] = []
        self._subscribers: set[asyncio.Queue[HypervisorEvent]] = set()
        self._mirror_problem: str | None = None
        self._closed = False
        self._reconnecting: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, uri: str) -> LibvirtHypervisor:
        """Connect to libvirt at ``uri`` (``Unavailable`` if it does not answer)."""
        adapter = cls(uri, asyncio.get_running_loop())
        await asyncio.to_thread(adapter._connection_now)
        return adapter

    # --- the connection ------------------------------------------------------------------

    def _connection_now(self) -> Any:
        with self._lock:
            if self._closed:
                raise Unavailable(f"libvirt at {self.uri}: the adapter is closed")
            if self._connection is not None and self._connection_alive():
                return self._connection
            self._drop_locked()
            _start_event_thread()
            try:
                connection = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise Unavailable(f"libvirt at {self.uri} does not answer: "
                                  f"{exc.get_error_message()} (is libvirtd running?)") from None
            self._connection = connection
            self._mirror_problem = _mirror_problem(connection)
            connection.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
            connection.registerCloseCallback(self._on_closed, None)
            self._callbacks = [
                connection.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None),
                connection.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self._on_block_job, None),
            ]
            return connection

    def _connection_alive(self) -> bool:
        try:
            return bool(self._connection.isAlive())
        except libvirt.libvirtError:
            return False

    def _drop_locked(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        for callback in self._callbacks:
            # a dead connection has no callbacks left to remove, nothing left to close
            with contextlib.suppress(libvirt.libvirtError):
                connection.domainEventDeregisterAny(callback)
        self._callbacks = []
        with contextlib.suppress(libvirt.libvirtError):
            connection.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            connection.close()

    def _on_closed(self, _connection: Any, reason: int, _opaque: Any) -> None:
        """On the libvirt event thread: libvirtd dropped the connection; open it again."""
        log.warning("libvirt at %s dropped the connection (reason %d): connecting again",
                    self.uri, reason)
        with contextlib.suppress(RuntimeError):  # a closed loop: the agent is gone
            self._loop.call_soon_threadsafe(self._reconnect_soon)

    def _reconnect_soon(self) -> None:
        if self._closed or (self._reconnecting is not None and not self._reconnecting.done()):
            return
        self._reconnecting = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._closed:
            try:
                await asyncio.to_thread(self._connection_now)
                log.info("libvirt at %s: connected again", self.uri)
                return
            except Unavailable:
                await asyncio.sleep(RECONNECT_INTERVAL_S)

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()

        def drop() -> None:
            with self._lock:
                self._drop_locked()

        await asyncio.to_thread(drop)

    async def _call(self, what: str, call: Callable[[Any], T], retry: bool = False) -> T:
        """``call(connection)`` in a thread; libvirt's errors as ours, about ``what``.

        ``retry``: once more on a new connection if the old one died under the call
        (only for calls that change nothing)."""
        def blocking() -> T:
            for attempt in (1, 2):
                connection = self._connection_now()
                try:
                    return call(connection)
                except libvirt.libvirtError as exc:
                    if retry and attempt == 1 and not self._connection_alive():
                        continue
                    raise self._error(exc, what) from None
            raise AssertionError("unreachable")

        return await asyncio.to_thread(blocking)

    async def run(self, what: str, call: Callable[[Any], T]) -> T:
        """``call(connection)`` as the adapter's own calls run (``libvirt_boot`` uses it)."""
        return await self._call(what, call)

    def _error(self, exc: libvirt.libvirtError, what: str) -> SeawallError:
        code, message = exc.get_error_code(), exc.get_error_message()
        if code == libvirt.VIR_ERR_NO_DOMAIN:  # ``what`` ends with the VM asked for
            vm = what[what.index("VM "):] if "VM " in what else what
            return NotFound(f"no {vm} at libvirt {self.uri} (see `seawall vm list`)")
        if code in _UNAVAILABLE_CODES or exc.get_error_domain() in (
                libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE) or not self._connection_alive():
            return Unavailable(f"libvirt at {self.uri} does not answer ({what}): {message}")
        if code == libvirt.VIR_ERR_BLOCK_COPY_ACTIVE or "block job" in message:
            return Conflict(f"{what}: already in a block job (a mirror, copy or commit "
                            f"runs on it): {message}")
        if code in _UNSUPPORTED_CODES:
            return InvalidInput(f"{what}: this libvirt or QEMU cannot do it: {message}")
        return SeawallError(f"libvirt: {what}: {message}")

    # --- inventory -----------------------------------------------------------------------

    async def list_vms(self) -> list[VmInfo]:
        def every(connection: Any) -> list[VmInfo]:
            found = []
            for domain in connection.listAllDomains(0):
                try:
                    found.append(vm_info(domain))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    # undefined between the listing and this look: not a VM any more
            return found

        return [self._checked(vm) for vm in
                await self._call("the VM listing", every, retry=True)]

    async def vm(self, name_or_uuid: str) -> VmInfo:
        return self._checked(await self._call(
            f"VM {name_or_uuid!r}", lambda c: vm_info(find_domain(c, name_or_uuid)),
            retry=True))

    def _checked(self, info: VmInfo) -> VmInfo:
        """The VM with why this host cannot mirror it, if it cannot (told before anything
        is made for it)."""
        if self._mirror_problem is None:
            return info
        return replace(info, mirror_problem=f"VM {info.name} on libvirt at {self.uri}: "
                                            f"{self._mirror_problem}")

    async def definition(self, vm_uuid: str) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
        text: str = await self._call(f"VM {vm_uuid!r}",
                                     lambda c: find_domain(c, vm_uuid).XMLDesc(flags), retry=True)
        return without_secrets(text)  # libvirt adds console passwords even without SECURE

    # --- the splitter --------------------------------------------------------------------

    async def attach_mirror(self, vm_uuid: str, disk: str, socket_path: Path,
                            export_name: str, *, full_copy: bool) -> None:
        if not full_copy:
            raise InvalidInput(
                f"disk {disk} of VM {vm_uuid}: libvirt's block copy always starts with a full "
                "copy of the disk; a mirror of new writes only (QEMU's sync=none) cannot be "
                "asked of libvirt")
        flags = _copy_flags()
        destination = mirror_target_xml(socket_path, export_name)

        def attach(connection: Any) -> None:
            if self._mirror_problem is not None:
                raise InvalidInput(f"cannot mirror disk {disk} of VM {vm_uuid}: "
                                   f"{self._mirror_problem}")
            domain = find_domain(connection, vm_uuid)
            entry = disk_entry(domain, disk)
            if entry.skip_reason is not None:
                raise InvalidInput(f"disk {disk} of VM {domain.name()} cannot be mirrored: "
                                   f"{entry.skip_reason}")
            state = STATES.get(domain.state()[0], "other")
            if state not in ("running", "paused"):
                raise Conflict(f"VM {domain.name()} is {state}: only a running VM's disk is "
                               "mirrored (a stopped one is read from its files)")
            domain.blockCopy(disk, destination, None, flags)

        await self._call(f"disk {disk} of VM {vm_uuid!r}", attach)

    async def detach_mirror(self, vm_uuid: str, disk: str) -> None:
        def detach(connection: Any) -> None:
            domain = find_domain(connection, vm_uuid)
            if not domain.isActive():
                return  # a shut-off VM has no mirror (and no block job to ask about)
            job = domain.blockJobInfo(disk, 0)
            if not job:
                return
            if job.get("type") != libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY:
                raise Conflict(f"disk {disk} of VM {domain.name()} runs another kind of block "
                               f"job (type {job.get('type')}), not a mirror: left alone")
            domain.blockJobAbort(disk, 0)  # no pivot: the VM keeps its own disk

        await self._call(f"disk {disk} of VM {vm_uuid!r}", detach)

    async def open_reader(self, vm_uuid: str, disk: str, socket_dir: Path) -> tuple[Path, str]:
        def node(connection: Any) -> tuple[str, str]:
            domain = find_domain(connection, vm_uuid)
            alias = libvirt_reader.disk_alias(domain.XMLDesc(0), disk)
            blocks = libvirt_reader.monitor(domain, "query-block", None)
            return domain.name(), libvirt_reader.disk_node(blocks, domain.name(), disk, alias)

        vm_name, node_name = await self._call(f"disk {disk} of VM {vm_uuid!r}", node)
        directory = await asyncio.to_thread(libvirt_reader.reader_dir, socket_dir)
        address = await qmp_reader.open_export(self._monitor(vm_uuid), vm_name, vm_uuid, disk,
                                               node_name, directory)
        self._reader_sockets[(vm_uuid, disk)] = address[0]
        return address

    async def close_reader(self, vm_uuid: str, disk: str) -> None:
        await qmp_reader.close_export(self._monitor(vm_uuid), disk,
                                      self._reader_sockets.pop((vm_uuid, disk), None))

    def _monitor(self, vm_uuid: str) -> qmp_reader.Run:
        """QMP commands to the QEMU of VM ``vm_uuid`` through libvirt (see libvirt_reader)."""
        async def run(command: str, arguments: dict[str, Any] | None) -> Any:
            return await self._call(
                f"{command} in the QEMU of VM {vm_uuid!r}",
                lambda c: libvirt_reader.monitor(find_domain(c, vm_uuid), command, arguments))

        return run

    async def mirrored_disks(self, vm_uuid: str) -> dict[str, bool]:
        def mirrored(connection: Any) -> dict[str, bool]:
            domain = find_domain(connection, vm_uuid)
            live_xml = domain.XMLDesc(0)
            ready = mirrors_ready(live_xml)
            found = {}
            for entry in parse_domain(live_xml).disks:
                if entry.skip_reason is not None:
                    continue
                job = domain.blockJobInfo(entry.target, 0)
                if job and job.get("type") == libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY:
                    found[entry.target] = ready.get(entry.target, False)
            return found

        return await self._call(f"VM {vm_uuid!r}", mirrored, retry=True)

    # --- the guest agent --------------------------------------------------------------

    async def freeze(self, vm_uuid: str, timeout_s: float) -> int | None:
        def frozen(connection: Any) -> int | None:
            domain = find_domain(connection, vm_uuid)
            try:
                domain.agentSetResponseTimeout(max(1, math.ceil(timeout_s)), 0)
                return int(domain.fsFreeze(None, 0))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in _NO_AGENT_CODES:
                    log.info("VM %s: no guest agent answered a freeze: %s", vm_uuid,
                             exc.get_error_message())
                    return None
                raise

        return await self._call(f"freeze of VM {vm_uuid!r}", frozen)

    async def thaw(self, vm_uuid: str) -> None:
        def thawed(connection: Any) -> None:
            domain = find_domain(connection, vm_uuid)
            try:
                domain.agentSetResponseTimeout(THAW_TIMEOUT_S, 0)
                domain.fsThaw(None, 0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in _NO_AGENT_CODES:
                    raise
                log.info("VM %s: no guest agent answered a thaw: %s", vm_uuid,
                         exc.get_error_message())

        await self._call(f"thaw of VM {vm_uuid!r}", thawed)

    async def shutdown_vm(self, vm_uuid: str, timeout_s: float) -> VmShutdown:
        """Through the guest agent (``guest-shutdown``), else the ACPI power button; then
        ``destroy`` at the deadline (``seawall.hypervisor.power``)."""
        def ask(connection: Any) -> str:
            domain = find_domain(connection, vm_uuid)
            for flag, how in ((libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT, "guest agent"),
                              (libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN, "ACPI")):
                try:
                    domain.shutdownFlags(flag)
                    return how
                except libvirt.libvirtError as exc:
                    log.info("VM %s: shutdown through the %s refused: %s", vm_uuid, how,
                             exc.get_error_message())
            return ""

        def is_off(connection: Any) -> bool:
            return not find_domain(connection, vm_uuid).isActive()

        def power_off(connection: Any) -> None:
            with contextlib.suppress(libvirt.libvirtError):  # it went down meanwhile
                find_domain(connection, vm_uuid).destroy()

        what = f"shutdown of VM {vm_uuid!r}"
        return await shut_down(lambda: self._call(what, ask),
                               lambda: self._call(what, is_off),
                               lambda: self._call(what, power_off), timeout_s)

    # --- events --------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[HypervisorEvent]:
        # Unbounded: events are few (a VM's lifecycle, a mirror's start and end), and a
        # dropped one would be a mirror whose end nobody notices.
        queue: asyncio.Queue[HypervisorEvent] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    def _publish(self, event: HypervisorEvent) -> None:
        """On the libvirt event thread: hand ``event`` to the asyncio loop's consumers."""
        def deliver() -> None:
            for queue in self._subscribers:
                queue.put_nowait(event)

        # A closed loop: the agent is gone, and so are its consumers.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(deliver)

    def _on_lifecycle(self, _connection: Any, domain: Any, event: int, detail: int,
                      _opaque: Any) -> None:
        change = _lifecycle_change(event, detail)
        if change is not None:
            self._publish(VmLifecycle(domain.UUIDString(), change))

    def _on_block_job(self, _connection: Any, domain: Any, disk: str, job_type: int,
                      status: int, _opaque: Any) -> None:
        if job_type != libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY:
            return
        if status == libvirt.VIR_DOMAIN_BLOCK_JOB_READY:
            self._publish(MirrorReady(domain.UUIDString(), disk))
        elif status in _JOB_END:
            self._publish(MirrorEnded(domain.UUIDString(), disk, _JOB_END[status]))


def _lifecycle_change(event: int, detail: int) -> LifecycleChange | None:
    """libvirt's lifecycle event as ours (None for those Seawall has no use for)."""
    if event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
        return "defined"
    if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
        return "undefined"
    if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
        return "started"
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        migrated = detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED
        return "migrated" if migrated else "stopped"
    return None


def _mirror_problem(connection: Any) -> str | None:
    """Why this libvirt or QEMU cannot run a write-blocking mirror (None: it can)."""
    libvirt_version, qemu_version = connection.getLibVersion(), connection.getVersion()
    if libvirt_version < MIN_LIBVIRT_VERSION:
        return (f"libvirt {_version_text(libvirt_version)} is too old for write-blocking "
                "mirrors (virDomainBlockCopy's synchronous-writes flag needs libvirt >= 8.0)")
    if qemu_version < MIN_QEMU_VERSION:
        return (f"QEMU {_version_text(qemu_version)} is too old for write-blocking mirrors "
                "(blockdev-mirror copy-mode write-blocking needs QEMU >= 3.0)")
    return None


def _version_text(version: int) -> str:
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


def _copy_flags() -> int:
    names = ("VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES", "VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB",
             "VIR_DOMAIN_BLOCK_COPY_REUSE_EXT")
    missing = [name for name in names if not hasattr(libvirt, name)]
    if missing:
        raise InvalidInput(f"libvirt-python lacks {', '.join(missing)}: write-blocking "
                           "mirrors need libvirt(-python) >= 8.0")
    flags = 0
    for name in names:
        flags |= getattr(libvirt, name)
    return flags
