"""Reading a running libvirt VM's disk through its own QEMU, for a resync by comparison.

The export is the QMP adapter's (``seawall.hypervisor.qmp_reader``: ``nbd-server-start``
on a Unix socket, ``block-export-add`` of the disk's node, read-only), its commands sent
through libvirt's QMP passthrough (``virDomainQemuMonitorCommand``). Why not libvirt's
own read path, a pull-mode backup (``virDomainBackupBegin``, whose NBD export libvirt
manages): libvirt 9.0 refuses it on a disk with a block job ("internal error: disk 'vda'
has a blockjob assigned", checked with QEMU 7.2 on a running guest), and the comparison
must run beside the disk's block copy, which is the splitter. The passthrough works beside
it (checked the same way: the copy stays ready, the export serves the guest-visible disk).

Rules and invariants:
- libvirt marks a domain that got a passthrough command *tainted* (``custom-monitor`` in
  its log, until it stops): a warning for support, nothing changes for the VM. The
  commands used change no state libvirt tracks (an NBD server and an export of our own,
  removed after the comparison); libvirt's own NBD server (a migration with storage copy,
  a pull backup) is never touched: ``qmp_reader`` gives ``Conflict`` while one runs. The
  other way round, libvirt cannot start its own (a storage migration fails) while ours
  runs: during a comparison, or after an agent killed in one until its next comparison.
- The node exported is the disk's top node as QEMU names it in ``query-block``
  (``inserted.node-name``, libvirt's ``libvirt-N-format``; QEMU shows it below the copy's
  implicit ``mirror_top`` filter), found by the disk's device alias from the live XML
  (``/machine/peripheral/<alias>``), never by guessing libvirt's node names.
- QEMU runs as libvirt's user (libvirt-qemu), not the agent's, and must create its server
  socket: it does so in ``READ_DIR`` inside the agent's socket directory, made group
  writable (0770) for that directory's group, the socket group libvirt's QEMU is in for
  the sinks already (``--socket-group``); no one else can traverse the socket directory.
- A reply with ``error`` is a ``PeerError`` carrying QEMU's description (``qmp_reader``
  reads "already running" and "not running" from it).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt_qemu

from seawall.errors import NotFound, PeerError, ProtocolViolation

READ_DIR = "qemu-read"
READ_DIR_MODE = 0o770


def reader_dir(socket_dir: Path) -> Path:
    """The directory QEMU's NBD server socket goes into (see the rules), made if needed."""
    directory = socket_dir / READ_DIR
    directory.mkdir(exist_ok=True)
    os.chown(directory, -1, socket_dir.stat().st_gid)
    directory.chmod(READ_DIR_MODE)
    return directory


def monitor(domain: Any, command: str, arguments: dict[str, Any] | None) -> Any:
    """QMP ``command`` through libvirt (blocking); its ``return``, PeerError on ``error``."""
    message: dict[str, Any] = {"execute": command}
    if arguments is not None:
        message["arguments"] = arguments
    reply = json.loads(libvirt_qemu.qemuMonitorCommand(domain, json.dumps(message), 0))
    if "error" in reply:
        raise PeerError(f"QEMU of VM {domain.name()}: {command}: "
                        f"{reply['error'].get('desc', reply['error'])}")
    return reply.get("return")


def disk_alias(live_xml: str, disk: str) -> str | None:
    """The device alias (``virtio-disk0``) of disk target ``disk`` in a live domain XML."""
    try:
        root = ET.fromstring(live_xml)
    except ET.ParseError as exc:
        raise ProtocolViolation(f"libvirt gave a domain XML that does not parse: {exc}") from None
    for element in root.iter("disk"):
        target, alias = element.find("target"), element.find("alias")
        if target is not None and alias is not None and target.get("dev") == disk:
            return alias.get("name")
    return None


def disk_node(query_block: list[dict[str, Any]], vm_name: str, disk: str,
              alias: str | None) -> str:
    """The top node of the device ``alias`` in QEMU's ``query-block`` (see the rules)."""
    device = f"/machine/peripheral/{alias}"
    for entry in query_block:
        qdev = str(entry.get("qdev", ""))
        node = (entry.get("inserted") or {}).get("node-name")
        if alias and node and (qdev == device or qdev.startswith(device + "/")):
            return str(node)
    raise NotFound(f"VM {vm_name}: QEMU shows no block node for disk {disk} "
                   f"(device {alias or 'unknown'}): it cannot be read for a resync")
