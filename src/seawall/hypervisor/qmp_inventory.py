"""What QMP's answers say about a VM, as ``seawall.hypervisor.base`` records (pure core).

Rules and invariants:
- No I/O: these functions take the decoded answers of ``query-*`` commands (and the text
  of HMP ``info network``) and return frozen records; ``qmp_adapter`` asks the questions.
- A disk's target is its device's qdev id (``-device virtio-blk-pci,id=vda``: ``vda``),
  read from ``qdev`` (``/machine/peripheral/vda/virtio-backend``), else the legacy drive
  name (``-drive id=...``). The node the mirror copies is the top node of the drive
  (``inserted.node-name``): for a qcow2 disk the format node, so the replica is raw.
- Removable media (CD-ROM, floppy) and read-only drives are listed with a skip reason:
  they are never mirrored.
- A qemu-storage-daemon (the same block layer without a VM, e.g. serving a VM's disks as
  vhost-user-blk) has no devices: its disks are its block exports, named by export id.
- The write-blocking copy mode of ``blockdev-mirror`` exists since QEMU 3.0.
- A drive with a block job's filter node above it (``JOB_FILTERS``: another mirror, a
  commit, a backup; ``query-block`` hides such implicit nodes, ``query-named-block-nodes``
  lists them with the file below) is busy: QEMU refuses a second job on it (``busy_with``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from seawall.errors import InvalidInput
from seawall.hypervisor.base import DiskInfo, NicInfo, VmState

WRITE_BLOCKING_SINCE = (3, 0)
JOB_FILTERS = {"mirror_top": "a mirror", "commit_top": "a commit",
               "copy-before-write": "a backup", "backup-top": "a backup"}
_PERIPHERAL = re.compile(r"^/machine/peripheral/([^/]+)")
_NETWORK_LINE = re.compile(r"^\s*(?:\\\s*)?([^:\s]+):\s*index=\d+,type=(\w+),?(.*)$")


@dataclass(frozen=True)
class QmpDisk:
    info: DiskInfo
    node_name: str  # the node blockdev-mirror copies ("" for a skipped disk)


def vm_state(status: str) -> VmState:
    """``query-status``'s ``status`` as a VM state."""
    if status == "running":
        return "running"
    if status in ("paused", "prelaunch", "suspended", "inmigrate", "debug", "io-error",
                  "watchdog", "guest-panicked", "save-vm", "restore-vm", "finish-migrate"):
        return "paused"
    if status == "shutdown":
        return "shut off"
    return "other"


def disk_target(entry: dict[str, Any]) -> str:
    qdev = str(entry.get("qdev") or "")
    match = _PERIPHERAL.match(qdev)
    if match:
        return match.group(1)
    if qdev and "/" not in qdev:
        return qdev
    return str(entry.get("device") or "")


def disks(query_block: list[dict[str, Any]]) -> list[QmpDisk]:
    """The guest's disks from ``query-block`` (entries with no device are internal)."""
    found: list[QmpDisk] = []
    for entry in query_block:
        target = disk_target(entry)
        if not target:
            continue
        inserted: dict[str, Any] = entry.get("inserted") or {}
        image: dict[str, Any] = inserted.get("image") or {}
        source = str(inserted.get("file") or "")
        fmt = str(image.get("format") or inserted.get("drv") or "")
        size_bytes = int(image.get("virtual-size") or 0)
        skip: str | None = None
        if entry.get("removable"):
            skip = "removable media (CD-ROM or floppy): not mirrored"
        elif not inserted:
            skip = "no medium"
        elif inserted.get("ro"):
            skip = "read-only drive: nothing to capture"
        node = "" if skip else str(inserted.get("node-name") or "")
        if skip is None and not node:
            skip = "drive without a node name: cannot be mirrored"
        found.append(QmpDisk(DiskInfo(target, source, fmt, size_bytes, skip), node))
    return found


def busy_with(nodes: list[dict[str, Any]], source: str) -> str:
    """The kind of block job whose filter sits above the image ``source``, from
    ``query-named-block-nodes`` (flat); "" when none does."""
    for node in nodes:
        kind = JOB_FILTERS.get(str(node.get("drv") or ""))
        if kind and source and node.get("file") == source:
            return kind
    return ""


def export_disks(exports: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> list[QmpDisk]:
    """A qemu-storage-daemon's disks: its block exports (vhost-user-blk, NBD...), named by
    export id, from ``query-block-exports`` and ``query-named-block-nodes``."""
    by_name = {str(node.get("node-name")): node for node in nodes}
    found = []
    for export in exports:
        node = by_name.get(str(export.get("node-name")), {})
        image: dict[str, Any] = node.get("image") or {}
        info = DiskInfo(str(export.get("id")), str(node.get("file") or ""),
                        str(image.get("format") or node.get("drv") or ""),
                        int(image.get("virtual-size") or 0),
                        "read-only node: nothing to capture" if node.get("ro") else None)
        found.append(QmpDisk(info, "" if info.skip_reason else str(export.get("node-name"))))
    return found


def nics(rx_filters: list[dict[str, Any]], info_network: str) -> tuple[NicInfo, ...]:
    """NICs from ``query-rx-filter`` (qdev id, MAC) and HMP ``info network`` (model, and the
    backend each NIC is peered with: ``user``, ``tap`` with its ``ifname``, ``bridge``...)."""
    models: dict[str, str] = {}
    backends: dict[str, tuple[str, str]] = {}  # nic id -> (kind, source)
    current = ""
    for line in info_network.splitlines():
        match = _NETWORK_LINE.match(line)
        if match is None:
            continue
        name, kind, rest = match.groups()
        fields = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
        if kind == "nic":
            current = name
            models[name] = fields.get("model", "")
        elif current and line.lstrip().startswith("\\"):
            backends[current] = (kind, fields.get("ifname") or fields.get("br") or name)
    result = []
    for nic in rx_filters:
        name = str(nic.get("name") or "")
        kind, source = backends.get(name, ("", ""))
        result.append(NicInfo(kind, source, str(nic.get("main-mac") or ""),
                              models.get(name, "")))
    return tuple(result)


def check_write_blocking(version: dict[str, Any], vm: str) -> None:
    """Refuse a QEMU older than write-blocking mirrors (``query-version``'s answer)."""
    problem = mirror_problem(version, vm)
    if problem is not None:
        raise InvalidInput(problem)


def mirror_problem(version: dict[str, Any], vm: str) -> str | None:
    """Why VM ``vm``'s QEMU cannot run a write-blocking mirror (None: it can)."""
    qemu = version.get("qemu") or {}
    have = (int(qemu.get("major", 0)), int(qemu.get("minor", 0)))
    if have >= WRITE_BLOCKING_SINCE:
        return None
    return (f"VM {vm} runs QEMU {have[0]}.{have[1]}, too old for a write-blocking mirror "
            f"(QEMU {WRITE_BLOCKING_SINCE[0]}.{WRITE_BLOCKING_SINCE[1]} or newer): it cannot "
            "be protected live")
