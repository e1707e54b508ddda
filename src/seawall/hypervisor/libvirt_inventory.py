"""Blocking reads of libvirt domains for ``LibvirtHypervisor``: lookups and inventory.

Rules and invariants:
- Called in the adapter's worker threads only (every call here blocks on libvirtd).
- A VM is looked up by uuid first (Seawall's name for it), else by name: a VM may be
  named like a uuid. ``VIR_ERR_NO_DOMAIN`` goes up for the adapter to turn into NotFound.
- A disk's virtual size is libvirt's ``blockInfo`` capacity (it opens the image of a shut
  off VM too); failing that (an image libvirt cannot open), ``qemu-img info -U`` of a
  local file or device; 0 when neither knows, or when there is no source (an empty
  CD-ROM). A size is never guessed from the file's length (a qcow2's is not its size).
"""

from __future__ import annotations

import json
import logging
import subprocess
import uuid
from typing import Any

import libvirt

from seawall.errors import NotFound
from seawall.hypervisor.base import DiskInfo, VmInfo, VmState
from seawall.hypervisor.libvirt_xml import DiskEntry, parse_domain

log = logging.getLogger(__name__)

QEMU_IMG_TIMEOUT_S = 30.0

STATES: dict[int, VmState] = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # running, waiting on a resource
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
}


def find_domain(connection: Any, name_or_uuid: str) -> Any:
    try:
        uuid.UUID(name_or_uuid)
    except ValueError:
        return connection.lookupByName(name_or_uuid)
    try:
        return connection.lookupByUUIDString(name_or_uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        return connection.lookupByName(name_or_uuid)  # a VM may be named like a uuid


def disk_entry(domain: Any, disk: str) -> DiskEntry:
    for entry in parse_domain(domain.XMLDesc(0)).disks:
        if entry.target == disk:
            return entry
    raise NotFound(f"VM {domain.name()} has no disk {disk!r}")


def vm_info(domain: Any) -> VmInfo:
    entry = parse_domain(domain.XMLDesc(0))
    disks = tuple(DiskInfo(target=disk.target, source=disk.source, format=disk.format,
                           size_bytes=_virtual_size_bytes(domain, disk),
                           skip_reason=disk.skip_reason)
                  for disk in entry.disks)
    return VmInfo(name=entry.name, uuid=entry.uuid,
                  state=STATES.get(domain.state()[0], "other"), disks=disks, nics=entry.nics)


def _virtual_size_bytes(domain: Any, disk: DiskEntry) -> int:
    """The guest-visible size: libvirt's ``blockInfo`` capacity (running or not), else
    qemu-img's virtual size of a local image; 0 when neither knows (an empty CD-ROM)."""
    if not disk.source:
        return 0
    try:
        return int(domain.blockInfo(disk.target, 0)[0])
    except libvirt.libvirtError as exc:
        if disk.path is None:
            log.info("no size for disk %s of VM %s: %s", disk.target, domain.name(), exc)
            return 0
    try:
        result = subprocess.run(  # -U: the image may be open in a running QEMU
            ["qemu-img", "info", "-U", "--output=json", disk.path], capture_output=True,
            text=True, check=True, timeout=QEMU_IMG_TIMEOUT_S)
        return int(json.loads(result.stdout)["virtual-size"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        log.info("no size for disk %s of VM %s: %s", disk.target, domain.name(), exc)
        return 0
