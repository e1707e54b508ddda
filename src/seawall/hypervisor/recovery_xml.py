"""Pure core of booting a recovered VM: a captured domain XML in, the domain XML to define
at the recovery site out, with a note for everything changed or left out; no I/O.

Rules and invariants:
- The recovered domain can never be mistaken for production: it has the name it is given
  (``web-test-app``) and no ``<uuid>`` (libvirt makes a new one).
- Every disk the group protected is served by the recovery site: a raw NBD disk on the
  agent's Unix socket (``NbdDisk``), or a clone's image file (``FileDisk``), keeping the
  guest-visible parts of the original (``<target>``, ``<boot order>``, ``<address>``,
  ``<serial>``, ``<wwn>``), so the guest
  finds its disks where it left them. Nothing of the original source or driver is kept.
- Nothing that names a host resource of the protected site is carried blindly. Removable
  media keep their host file only where that path exists at the recovery host (else the
  drive stays, empty); other unprotected disks, host devices (``<hostdev>``,
  ``<redirdev>``, host ``<filesystem>`` shares, passthrough ``<smartcard>`` and ``<tpm>``),
  the NVRAM file, CPU pinning and cgroup partitions, static security labels and the
  emulator path (the recovery host's default is used) are left out. Kernel, initrd, DTB
  and firmware paths stay only where they exist at the recovery host. Each omission that
  can change what the guest sees is a note for the report.
- Every NIC ends on a libvirt network of the recovery host: the network mapped for its
  MAC, else for its original network or bridge name, else ``default_network`` (the
  group's isolated test network); with no default an unmapped NIC is refused, naming it,
  unless the target keeps unmapped NICs as captured (a clone's definition, defined shut
  off: the operator chooses its networks before starting it).
  Its MAC, model, PCI address and boot order are kept; host-side settings (tap name,
  virtual port, VLAN, filter, bandwidth) are not.
- The guest's first serial port is a pty whose output libvirt logs to ``console_log``,
  appended (the caller removes it before the first boot, so a commit's save and restore
  keeps what the guest printed before); a console is added if the VM had none; other
  serial ports and consoles on host files or sockets go. The guest agent's channel keeps
  its target and loses its host path (libvirt makes one for the recovered domain).
- ``domain_type`` overrides the accelerator (``qemu`` for TCG where KVM is unusable); a
  host CPU model (``host-passthrough``/``host-model``) cannot run under TCG and goes then.
- The domain carries ``<metadata>`` with Seawall's element (``METADATA_URI``): the
  operation and group it was made for, so that what a crashed agent left running can be
  found and removed by that mark alone, never by name.
- Graphical consoles listen where the recovery host's libvirt defaults (``listen`` and
  fixed ports go): a recovered VM is never published on an address chosen for another host.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from seawall.errors import CorruptData, InvalidInput

_HOST_DEVICES = {
    "hostdev": "a host device passed through",
    "redirdev": "a redirected USB device",
    "filesystem": "a host directory shared with the guest",
}
_KEPT_NIC_CHILDREN = ("mac", "model", "address", "boot", "mtu", "driver")
_KEPT_DISK_CHILDREN = ("target", "boot", "address", "serial", "wwn", "alias")
_OS_PATHS = ("kernel", "initrd", "dtb", "loader")
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
METADATA_URI = "https://seawall.dev/xmlns/recovered/1"
METADATA_KEY = "seawall"
ET.register_namespace(METADATA_KEY, METADATA_URI)  # serialised as seawall:, not ns0:


@dataclass(frozen=True)
class NbdDisk:
    """Where the recovery site serves a recovered disk: an export of an NBD Unix socket."""

    socket_path: Path
    export_name: str


@dataclass(frozen=True)
class FileDisk:
    """A recovered disk as an image file (a clone), in ``format`` (raw or qcow2)."""

    path: Path
    format: str


@dataclass(frozen=True)
class RecoveryTarget:
    """What the recovered domain is made of at the recovery site."""

    name: str
    disks: Mapping[str, NbdDisk | FileDisk]  # disk target (vda) -> its recovered image
    network_map: Mapping[str, str]  # NIC MAC or original network/bridge -> recovery network
    default_network: str | None  # unmapped NICs (None: every NIC must be mapped...)
    console_log: Path
    mark: Mapping[str, str]  # e.g. operation and group: the attributes of our metadata
    domain_type: str | None = None  # None: the captured one (kvm, qemu)
    keep_unmapped_nics: bool = False  # ...unless they stay on the network they were on


@dataclass(frozen=True)
class RecoveryDomain:
    xml: str
    notes: tuple[str, ...]  # what was left out or changed, one sentence each, for the report
    guest_agent: bool  # the domain has qemu-guest-agent's channel (readiness can be asked)


def recovered_mark(metadata_xml: str) -> dict[str, str]:
    """The attributes of our metadata element (libvirt's ``metadata(ELEMENT, URI)``)."""
    try:
        return dict(ET.fromstring(metadata_xml).attrib)
    except ET.ParseError as exc:
        raise CorruptData(f"a recovered domain's metadata does not parse: {exc}") from None


def recovery_domain(definition: str, target: RecoveryTarget,
                    host_path_exists: Callable[[str], bool]) -> RecoveryDomain:
    """The domain to define for ``target`` from a captured ``definition`` (domain XML)."""
    try:
        root = ET.fromstring(definition)
    except ET.ParseError as exc:
        raise CorruptData(f"the captured definition does not parse: {exc}") from None
    if root.tag != "domain":
        raise CorruptData(f"the captured definition is a <{root.tag}>, not a <domain>")
    notes: list[str] = []
    _identity(root, target, notes)
    _os(root, host_path_exists, notes)
    _host_tuning(root, notes)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    _devices(devices, target, host_path_exists, notes)
    guest_agent = any(target.get("name") == GUEST_AGENT_CHANNEL
                      for target in devices.iterfind("channel/target"))
    return RecoveryDomain(xml=ET.tostring(root, encoding="unicode"), notes=tuple(notes),
                          guest_agent=guest_agent)


def isolated_network_xml(name: str) -> str:
    """A libvirt network with no ``<forward>`` (no route out) and no ``<ip>`` (no host
    address, no DHCP): the recovered VMs on it reach each other and nothing else."""
    network = ET.Element("network")
    ET.SubElement(network, "name").text = name
    ET.SubElement(network, "bridge", stp="on", delay="0")
    return ET.tostring(network, encoding="unicode")


def _identity(root: ET.Element, target: RecoveryTarget, notes: list[str]) -> None:
    for child in ("uuid", "name"):
        for element in root.findall(child):
            root.remove(element)
    name = ET.Element("name")
    name.text = target.name
    root.insert(0, name)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    for ours in metadata.findall(f"{{{METADATA_URI}}}recovered"):
        metadata.remove(ours)
    ET.SubElement(metadata, f"{{{METADATA_URI}}}recovered", dict(target.mark))
    root.attrib.pop("id", None)
    if target.domain_type is not None and root.get("type") != target.domain_type:
        notes.append(f"runs with accelerator {target.domain_type!r} (captured: "
                     f"{root.get('type')!r})")
        root.set("type", target.domain_type)
        cpu = root.find("cpu")
        if target.domain_type == "qemu" and cpu is not None and cpu.get("mode") in (
                "host-passthrough", "host-model"):
            root.remove(cpu)
            notes.append(f"CPU model {cpu.get('mode')} left out: it needs KVM")


def _os(root: ET.Element, host_path_exists: Callable[[str], bool], notes: list[str]) -> None:
    os_element = root.find("os")
    if os_element is None:
        return
    for tag in _OS_PATHS:
        for element in os_element.findall(tag):
            path = (element.text or "").strip()
            if path and not host_path_exists(path):
                os_element.remove(element)
                notes.append(f"{tag} {path} left out: not on the recovery host")
    for nvram in os_element.findall("nvram"):
        os_element.remove(nvram)
        notes.append("NVRAM left out: the recovered VM starts with fresh firmware variables")


def _host_tuning(root: ET.Element, notes: list[str]) -> None:
    for tag, what in (("cputune", "CPU pinning"), ("numatune", "NUMA placement"),
                      ("resource", "cgroup partition")):
        for element in root.findall(tag):
            root.remove(element)
            notes.append(f"{what} left out: it names the protected host's resources")
    vcpu = root.find("vcpu")
    if vcpu is not None:
        vcpu.attrib.pop("cpuset", None)
    for label in root.findall("seclabel"):
        if label.get("type") == "static":
            root.remove(label)
            notes.append("static security label left out: the recovery host labels it")


def _devices(devices: ET.Element, target: RecoveryTarget,
             host_path_exists: Callable[[str], bool], notes: list[str]) -> None:
    consoles: list[ET.Element] = []
    for device in list(devices):
        if device.tag == "emulator":
            devices.remove(device)
        elif device.tag == "disk":
            _disk(devices, device, target, host_path_exists, notes)
        elif device.tag == "interface":
            _interface(device, target)
        elif device.tag in _HOST_DEVICES:
            devices.remove(device)
            notes.append(f"{_HOST_DEVICES[device.tag]} left out")
        elif device.tag in ("smartcard", "tpm") and _passes_through(device):
            devices.remove(device)
            notes.append(f"passthrough {device.tag} left out")
        elif device.tag in ("serial", "console"):
            consoles.append(device)
        elif device.tag == "channel":
            for source in device.findall("source"):
                device.remove(source)
        elif device.tag == "graphics":
            for key in ("listen", "port", "websocket", "tlsPort"):
                device.attrib.pop(key, None)
            device.set("autoport", "yes")
            for listen in device.findall("listen"):
                device.remove(listen)
    _console(devices, consoles, target.console_log, notes)
    missing = sorted(set(target.disks) - _targets(devices))
    if missing:
        raise InvalidInput(f"the captured definition has no disk {', '.join(missing)}")


def _targets(devices: ET.Element) -> set[str]:
    return {target.get("dev", "") for disk in devices.findall("disk")
            for target in disk.findall("target")}


def _passes_through(device: ET.Element) -> bool:
    backend = device.find("backend")
    return (device.get("mode") in ("host", "passthrough")
            or (backend is not None and backend.get("type") == "passthrough"))


def _disk(devices: ET.Element, disk: ET.Element, target: RecoveryTarget,
          host_path_exists: Callable[[str], bool], notes: list[str]) -> None:
    target_element = disk.find("target")
    dev = "" if target_element is None else target_element.get("dev", "")
    served = target.disks.get(dev)
    if served is not None:
        kept = [child for tag in _KEPT_DISK_CHILDREN for child in disk.findall(tag)]
        disk.clear()
        disk.set("device", "disk")
        if isinstance(served, FileDisk):
            disk.set("type", "file")
            ET.SubElement(disk, "driver", name="qemu", type=served.format)
            ET.SubElement(disk, "source", file=str(served.path))
        else:
            disk.set("type", "network")
            ET.SubElement(disk, "driver", name="qemu", type="raw")
            nbd = ET.SubElement(disk, "source", protocol="nbd", name=served.export_name)
            ET.SubElement(nbd, "host", transport="unix", socket=str(served.socket_path))
        disk.extend(kept)
        return
    if disk.get("device") in ("cdrom", "floppy"):
        source = disk.find("source")
        path = None if source is None else source.get("file") or source.get("dev")
        if source is not None and not (path and host_path_exists(path)):
            disk.remove(source)
            disk.set("type", "file")
            notes.append(f"{disk.get('device')} {dev}: {path or 'its medium'} left out "
                         "(not on the recovery host): the drive is empty")
        return
    devices.remove(disk)
    notes.append(f"disk {dev} left out: the group does not protect it")


def _interface(interface: ET.Element, target: RecoveryTarget) -> None:
    mac_element = interface.find("mac")
    mac = "" if mac_element is None else mac_element.get("address", "").lower()
    source = interface.find("source")
    original = "" if source is None else (source.get("network") or source.get("bridge")
                                          or source.get("dev") or "")
    network = (target.network_map.get(mac) or target.network_map.get(original)
               or target.default_network)
    if network is None and target.keep_unmapped_nics:
        for host_side in ("target", "alias"):
            for element in interface.findall(host_side):
                interface.remove(element)
        return
    if network is None:
        raise InvalidInput(f"NIC {mac or '(no MAC)'} on {original or interface.get('type')!r} "
                           "has no network at the recovery site: map it "
                           "(--network-map MAC_OR_NETWORK=TARGET)")
    kept = [child for tag in _KEPT_NIC_CHILDREN for child in interface.findall(tag)]
    interface.clear()
    interface.set("type", "network")
    ET.SubElement(interface, "source", network=network)
    interface.extend(kept)


def _console(devices: ET.Element, consoles: list[ET.Element], console_log: Path,
             notes: list[str]) -> None:
    """The first serial port (or console) a pty logged to ``console_log``; other ports on
    host files or sockets go (see the rules)."""
    serials = [c for c in consoles if c.tag == "serial"] or consoles
    first = serials[0] if serials else None
    for console in consoles:
        if console is first:
            continue
        target = console.find("target")
        if first is not None and console.tag == "console" and first.tag == "serial" and (
                target is None or target.get("type", "serial") == "serial"):
            devices.remove(console)  # serial 0 shown again: libvirt adds it back
        elif console.get("type") not in ("pty", None):
            devices.remove(console)
            notes.append(f"{console.tag} on a host {console.get('type')} left out")
    if first is None:
        first = ET.SubElement(devices, "serial")
        ET.SubElement(first, "target", port="0")
    kept = [child for child in first if child.tag in ("target", "address", "alias")]
    first.clear()
    first.set("type", "pty")
    ET.SubElement(first, "log", file=str(console_log), append="on")
    first.extend(kept)
