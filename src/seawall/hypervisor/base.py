"""What an agent asks of its host's hypervisor: inventory, the splitter, definitions, events.

Rules and invariants:
- One adapter per agent, chosen by ``--hypervisor`` (``parse_hypervisor_spec``): libvirt
  (libvirt-python) or QMP sockets in a directory (qemu.qmp); ``none`` is volume-only mode.
- Adapters are the only code that speaks to a hypervisor; everything above them sees the
  frozen records below, never libvirt objects or QMP dictionaries.
- A VM is named by its uuid inside Seawall (names can change and repeat across hosts); its
  disks by their target (``vda``), which is what both libvirt and our records show.
- The splitter is QEMU's active mirror in write-blocking mode onto an NBD export of the
  agent (a capture sink on a Unix socket). ``attach_mirror`` returns once the job exists;
  the job's progress comes as ``MirrorReady`` / ``MirrorEnded`` events. Whatever happens
  to the agent, the mirror job only ever ends: the VM keeps its disk and keeps running.
- ``full_copy=False`` attaches a mirror of new writes only (QEMU's ``sync: none``): every
  guest write from the moment ``attach_mirror`` returns reaches the sink, nothing else.
  Only an adapter with ``mirrors_new_writes`` offers it (QMP; libvirt's block copy always
  starts with a full copy: the ``Splitter`` then has the sink discard the copy phase).
- ``reads_disks``: the adapter offers ``open_reader``, a read-only NBD export of the
  running disk served *by QEMU* (never the image file behind QEMU's back), on a Unix
  socket in ``socket_dir``; ``close_reader`` removes it. A resync reads the disk there
  and compares it with the recovery site (``seawall.agent.protect.syncer``).
- ``VmInfo.mirror_problem`` says, before anything is made, why a VM's hypervisor cannot
  run a write-blocking mirror (libvirt < 8.0, QEMU < 3.0), naming the VM or host.
- Every call that fails raises ``SeawallError`` subclasses naming the VM and disk
  (``NotFound`` for an unknown VM, ``Unavailable`` when the hypervisor cannot be reached,
  ``Conflict`` for a disk already mirrored, ``InvalidInput`` for a disk that cannot be).
- ``freeze``/``thaw`` go through the guest's qemu-guest-agent: ``freeze`` returns how many
  file systems it froze, or None when no guest agent answered within ``timeout_s`` (the
  caller then takes a crash-consistent checkpoint). A freeze that timed out may still
  happen in the guest, so a caller thaws every VM it *tried* to freeze; ``thaw`` of a VM
  that is not frozen, or has no agent, does nothing.
- ``shutdown_vm`` asks the guest to shut down (libvirt: its guest agent, else ACPI; QMP:
  ``system_powerdown``) and powers the VM off after ``timeout_s`` (``power``); how it
  went is the answer, for the operator's report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from seawall.errors import InvalidInput
from seawall.hypervisor.power import VmShutdown

VmState = Literal["running", "paused", "shut off", "other"]


@dataclass(frozen=True)
class DiskInfo:
    target: str  # vda, sda...: unique within the VM
    source: str  # the image file or device behind it ("" when none, e.g. an empty CD-ROM)
    format: str  # raw, qcow2, ...
    size_bytes: int  # the guest-visible (virtual) size
    skip_reason: str | None = None  # why Seawall cannot mirror it (CD-ROM, shareable, LUN)


@dataclass(frozen=True)
class NicInfo:
    kind: str  # network, bridge, user, ...
    source: str  # the network or bridge name
    mac: str
    model: str


@dataclass(frozen=True)
class VmInfo:
    name: str
    uuid: str
    state: VmState
    disks: tuple[DiskInfo, ...]
    nics: tuple[NicInfo, ...]
    mirror_problem: str | None = None  # why its hypervisor cannot mirror it (too old)


@dataclass(frozen=True)
class MirrorReady:
    """The mirror's full copy is done: from now on the sink sees every write in order."""

    vm_uuid: str
    disk: str


@dataclass(frozen=True)
class MirrorEnded:
    """The mirror job is gone (cancelled, failed, sink lost, VM stopped)."""

    vm_uuid: str
    disk: str
    reason: str


@dataclass(frozen=True)
class VmLifecycle:
    """A VM started, stopped, was defined, changed, undefined or migrated away."""

    vm_uuid: str
    change: Literal["started", "stopped", "defined", "undefined", "migrated"]


HypervisorEvent = MirrorReady | MirrorEnded | VmLifecycle


class Hypervisor(Protocol):
    spec: str  # as given to --hypervisor, for messages and `agent list`
    reads_disks: bool  # offers open_reader (see the rules)
    mirrors_new_writes: bool  # offers attach_mirror(full_copy=False)

    async def list_vms(self) -> list[VmInfo]: ...

    async def vm(self, name_or_uuid: str) -> VmInfo: ...  # NotFound naming it

    async def definition(self, vm_uuid: str) -> str: ...  # domain XML, or QMP's JSON view

    async def attach_mirror(self, vm_uuid: str, disk: str, socket_path: Path,
                            export_name: str, *, full_copy: bool) -> None: ...

    async def detach_mirror(self, vm_uuid: str, disk: str) -> None: ...  # no-op if none

    async def mirrored_disks(self, vm_uuid: str) -> dict[str, bool]: ...  # disk -> ready

    async def open_reader(self, vm_uuid: str, disk: str,
                          socket_dir: Path) -> tuple[Path, str]: ...  # (socket, export)

    async def close_reader(self, vm_uuid: str, disk: str) -> None: ...  # no-op if none

    def events(self) -> AsyncIterator[HypervisorEvent]: ...

    async def freeze(self, vm_uuid: str, timeout_s: float) -> int | None: ...

    async def thaw(self, vm_uuid: str) -> None: ...

    async def shutdown_vm(self, vm_uuid: str, timeout_s: float) -> VmShutdown: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class HypervisorSpec:
    kind: Literal["none", "libvirt", "qmp"]
    location: str  # libvirt URI or QMP socket directory; "" for none


DEFAULT_LIBVIRT_URI = "qemu:///system"


def parse_hypervisor_spec(text: str) -> HypervisorSpec:
    """``none``, ``libvirt`` / ``libvirt:URI`` or ``qmp:DIR``; anything else is refused."""
    kind, _, location = text.partition(":")
    if kind == "none" and not location:
        return HypervisorSpec("none", "")
    if kind == "libvirt":
        return HypervisorSpec("libvirt", location or DEFAULT_LIBVIRT_URI)
    if kind == "qmp" and location:
        return HypervisorSpec("qmp", location)
    raise InvalidInput(
        f"--hypervisor {text!r}: use none, libvirt[:URI] (default {DEFAULT_LIBVIRT_URI}) "
        "or qmp:DIR (a directory of QMP sockets, e.g. /var/run/qemu-server)"
    )
