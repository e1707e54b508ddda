"""Pure core of the libvirt adapter: domain XML in, Seawall's records out; no I/O.

Rules and invariants:
- A disk is described from its ``<disk>`` element only: ``target`` (``<target dev>``),
  ``source`` (``<source file|dev>``, ``pool/volume`` for a storage-pool volume, the
  protocol and name for a network disk, "" for none), ``format`` (``<driver type>``,
  "raw" when libvirt is left to probe — it then treats it as raw). The virtual size is
  the shell's to find (``blockInfo``, qemu-img), not the XML's.
- ``skip_reason`` says why Seawall does not mirror a disk, checked in this order:
  removable media (``device='cdrom'|'floppy'``), a passthrough LUN (``device='lun'``),
  ``<shareable/>`` (another VM writes it too: a mirror would miss those writes),
  ``<readonly/>``, no source (nothing to copy), and a source QEMU does not hold as a block
  node of its own (``type='network'``, ``vhostuser``, ``nvme``, ``dir``): those are left to
  their own storage's replication. Everything else (files and block devices, raw or
  qcow2, and pool volumes of those) can be mirrored.
- A NIC is its ``<interface type>``, its source (network, bridge, device of a macvtap,
  or "" for user networking), MAC and ``<model type>`` ("" when libvirt chooses).
- ``without_secrets``: libvirt (9.0) puts a console's password (``<graphics passwd>``) in
  the inactive and the migratable XML even without ``VIR_DOMAIN_XML_SECURE``; it goes.
  XML with no password is returned as it came (verbatim), other XML re-serialised.
- ``mirror_target_xml`` is the ``<disk>`` a block copy writes into: raw, over NBD on a
  Unix socket, never anything from the caller put unescaped into XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from seawall.errors import ProtocolViolation
from seawall.hypervisor.base import NicInfo

_UNMIRRORED_TYPES = {
    "network": "a network disk ({source}): its storage is not a block node QEMU mirrors "
               "for us here; protect it with its storage's own replication",
    "vhostuser": "a vhost-user disk: its I/O bypasses QEMU's block layer",
    "nvme": "an NVMe disk passed to QEMU's userspace driver",
    "dir": "a host directory shown to the guest as a FAT disk",
}


@dataclass(frozen=True)
class DiskEntry:
    """A ``<disk>`` of a domain, before its size is known."""

    target: str
    source: str
    format: str
    skip_reason: str | None
    path: str | None  # a local file or device the shell may measure (qemu-img), else None


@dataclass(frozen=True)
class DomainEntry:
    name: str
    uuid: str
    disks: tuple[DiskEntry, ...]
    nics: tuple[NicInfo, ...]


def parse_domain(xml_text: str) -> DomainEntry:
    """The name, uuid, disks and NICs of a domain's XML (``XMLDesc``)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ProtocolViolation(f"libvirt gave a domain XML that does not parse: {exc}") from None
    devices = root.find("devices")
    disks = () if devices is None else tuple(_disk(d) for d in devices.findall("disk"))
    nics = () if devices is None else tuple(_nic(i) for i in devices.findall("interface"))
    return DomainEntry(name=root.findtext("name", ""), uuid=root.findtext("uuid", ""),
                       disks=disks, nics=nics)


def without_secrets(xml_text: str) -> str:
    """A domain's XML without the passwords of its graphical consoles (see the rules)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ProtocolViolation(f"libvirt gave a domain XML that does not parse: {exc}") from None
    secret = [graphics for graphics in root.iter("graphics") if "passwd" in graphics.attrib]
    for graphics in secret:
        del graphics.attrib["passwd"]
    return ET.tostring(root, encoding="unicode") if secret else xml_text


def _attr(element: ET.Element, child: str, name: str) -> str:
    found = element.find(child)
    return "" if found is None else found.get(name, "")


def _disk(disk: ET.Element) -> DiskEntry:
    kind = disk.get("type", "file")
    device = disk.get("device", "disk")
    source_element = disk.find("source")
    source = ""
    if source_element is not None:
        if kind == "file":
            source = source_element.get("file", "")
        elif kind == "block":
            source = source_element.get("dev", "")
        elif kind == "volume":
            source = f"{source_element.get('pool', '')}/{source_element.get('volume', '')}"
        elif kind == "network":
            source = (f"{source_element.get('protocol', '')}:"
                      f"{source_element.get('name', '')}")
        elif kind == "dir":
            source = source_element.get("dir", "")
    return DiskEntry(target=_attr(disk, "target", "dev"), source=source,
                     format=_attr(disk, "driver", "type") or "raw",
                     skip_reason=_skip_reason(disk, kind, device, source),
                     path=source if kind in ("file", "block") and source else None)


def _skip_reason(disk: ET.Element, kind: str, device: str, source: str) -> str | None:
    if device in ("cdrom", "floppy"):
        return f"a {'CD-ROM' if device == 'cdrom' else 'floppy'} (removable, read-only media)"
    if device == "lun":
        return "a passthrough LUN (the guest sends SCSI commands to the device itself)"
    if disk.find("shareable") is not None:
        return "shareable: other VMs write it too, and a mirror would miss their writes"
    if disk.find("readonly") is not None:
        return "read-only: the guest cannot change it"
    if kind in _UNMIRRORED_TYPES:
        return _UNMIRRORED_TYPES[kind].format(source=source)
    if not source:
        return "no source: nothing to copy"
    return None


def _nic(interface: ET.Element) -> NicInfo:
    kind = interface.get("type", "")
    source = interface.find("source")
    name = ""
    if source is not None:
        name = (source.get("network") or source.get("bridge") or source.get("dev")
                or source.get("path") or "")
    return NicInfo(kind=kind, source=name, mac=_attr(interface, "mac", "address"),
                   model=_attr(interface, "model", "type"))


def mirror_target_xml(socket_path: Path, export_name: str) -> str:
    """The destination of a block copy: ``export_name`` of an NBD server on a Unix socket."""
    disk = ET.Element("disk", type="network")
    ET.SubElement(disk, "driver", type="raw")
    source = ET.SubElement(disk, "source", protocol="nbd", name=export_name)
    ET.SubElement(source, "host", transport="unix", socket=str(socket_path))
    return ET.tostring(disk, encoding="unicode")


def mirrors_ready(xml_text: str) -> dict[str, bool]:
    """Disk target -> whether libvirt's ``<mirror>`` of it says ready (a live domain XML)."""
    ready = {}
    for disk in ET.fromstring(xml_text).iter("disk"):
        mirror, target = disk.find("mirror"), disk.find("target")
        if mirror is not None and target is not None:
            ready[target.get("dev", "")] = mirror.get("ready") == "yes"
    return ready
