"""The pure cores of booting a recovered VM: what the recovery site defines, from a captured
domain XML (each output also checked against libvirt's own schema, virt-xml-validate), and
in which order the VMs start."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from seawall.errors import CorruptData, InvalidInput
from seawall.hypervisor.recovery_xml import (
    METADATA_URI,
    FileDisk,
    NbdDisk,
    RecoveryTarget,
    isolated_network_xml,
    recovered_mark,
    recovery_domain,
)
from seawall.manager.recovery.vm_boot import boot_plan

CAPTURED = """<domain type='kvm' id='7'>
  <name>web</name>
  <uuid>0d6f6c5e-2f4a-4b8e-9a51-3c1f2e0b7a10</uuid>
  <memory unit='MiB'>512</memory>
  <vcpu placement='static' cpuset='2-3'>2</vcpu>
  <cputune><vcpupin vcpu='0' cpuset='2'/></cputune>
  <resource><partition>/machine/gold</partition></resource>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram>
    <kernel>/boot/vmlinuz-web</kernel></os>
  <cpu mode='host-passthrough'/>
  <devices>
    <emulator>/opt/qemu/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/libvirt/images/web.qcow2'/><target dev='vda' bus='virtio'/>
      <boot order='1'/><serial>WEB-ROOT</serial></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/data'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='/iso/tools.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
    <disk type='file' device='cdrom'><source file='/iso/debian.iso'/>
      <target dev='sdb' bus='sata'/><readonly/></disk>
    <disk type='network' device='disk'><driver name='qemu' type='raw'/>
      <source protocol='rbd' name='pool/image'><host name='ceph1' port='6789'/></source>
      <target dev='vdc' bus='virtio'/></disk>
    <interface type='network'><mac address='52:54:00:AA:BB:01'/><source network='prod'/>
      <target dev='vnet3'/><model type='virtio'/><filterref filter='clean-traffic'/>
      <boot order='2'/></interface>
    <interface type='bridge'><mac address='52:54:00:aa:bb:02'/><source bridge='br-db'/>
      <virtualport type='openvswitch'/><model type='e1000e'/></interface>
    <interface type='direct'><mac address='52:54:00:aa:bb:03'/>
      <source dev='eth0' mode='bridge'/></interface>
    <hostdev mode='subsystem' type='pci'><source><address domain='0' bus='3' slot='0'
      function='0'/></source></hostdev>
    <filesystem type='mount'><source dir='/srv/share'/><target dir='share'/></filesystem>
    <serial type='file'><source path='/var/log/web-console.log'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='/run/web-serial1'/><target port='1'/></serial>
    <console type='file'><source path='/var/log/web-console.log'/>
      <target type='serial' port='0'/></console>
    <channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/ga'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' port='5901' autoport='no' listen='0.0.0.0'>
      <listen type='address' address='0.0.0.0'/></graphics>
  </devices>
  <seclabel type='static' model='selinux'><label>system_u:system_r:svirt_t:s0:c1</label></seclabel>
</domain>"""

TARGET = RecoveryTarget(
    name="web-test-app",
    disks={"vda": NbdDisk(Path("/srv/seawall/run/nbd.sock"), "test-app-web-vda"),
           "vdb": NbdDisk(Path("/srv/seawall/run/nbd.sock"), "test-app-web-vdb")},
    network_map={"52:54:00:aa:bb:02": "dr-db", "prod": "dr-front"},
    default_network="seawall-test-app",
    console_log=Path("/srv/seawall/tests/web-test-app.console.log"),
    mark={"operation": "test-20261208-app", "group": "app"},
    domain_type="qemu",
)
ON_RECOVERY_HOST = {"/iso/tools.iso", "/boot/vmlinuz-web"}


def validate(xml_text: str, kind: str, tmp_path: Path) -> None:
    """libvirt's own schema accepts it (`make debs` installs the validator)."""
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("needs virt-xml-validate and xmllint (libvirt-clients, libxml2-utils)")
    path = tmp_path / f"{kind}.xml"
    path.write_text(xml_text)
    result = subprocess.run(["virt-xml-validate", str(path), kind], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_recovered_domain_is_new_served_by_the_recovery_site_and_validates(
        tmp_path: Path) -> None:
    recovered = recovery_domain(CAPTURED, TARGET, ON_RECOVERY_HOST.__contains__)
    validate(recovered.xml, "domain", tmp_path)
    assert recovered.guest_agent
    root = ET.fromstring(recovered.xml)
    assert root.findtext("name") == "web-test-app"
    assert root.find("uuid") is None and "id" not in root.attrib
    [mark] = root.findall(f"metadata/{{{METADATA_URI}}}recovered")
    assert recovered_mark(ET.tostring(mark, encoding="unicode")) == {
        "operation": "test-20261208-app", "group": "app"}
    assert root.get("type") == "qemu" and root.find("cpu") is None
    assert root.find("cputune") is None and root.find("resource") is None
    assert "cpuset" not in root.find("vcpu").attrib  # type: ignore[union-attr]
    assert root.find("seclabel") is None
    os_element = root.find("os")
    assert os_element is not None
    assert os_element.findtext("kernel") == "/boot/vmlinuz-web"  # it exists there
    assert os_element.find("loader") is None and os_element.find("nvram") is None
    devices = root.find("devices")
    assert devices is not None and devices.find("emulator") is None

    disks = {d.find("target").get("dev"): d for d in devices.findall("disk")}  # type: ignore[union-attr]
    assert set(disks) == {"vda", "vdb", "sda", "sdb"}  # the Ceph disk is not ours
    vda = disks["vda"]
    assert (vda.get("type"), vda.find("driver").attrib) == (  # type: ignore[union-attr]
        "network", {"name": "qemu", "type": "raw"})
    source = vda.find("source")
    assert source is not None and source.attrib == {"protocol": "nbd",
                                                    "name": "test-app-web-vda"}
    assert source.find("host").attrib == {  # type: ignore[union-attr]
        "transport": "unix", "socket": "/srv/seawall/run/nbd.sock"}
    assert vda.find("boot").get("order") == "1"  # type: ignore[union-attr]
    assert vda.findtext("serial") == "WEB-ROOT"
    assert disks["sda"].find("source").get("file") == "/iso/tools.iso"  # type: ignore[union-attr]
    assert disks["sdb"].find("source") is None  # its ISO is not at the recovery host

    nics = {n.find("mac").get("address"): n for n in devices.findall("interface")}  # type: ignore[union-attr]
    networks = {mac: (n.get("type"), n.find("source").attrib)  # type: ignore[union-attr]
                for mac, n in nics.items()}
    assert networks == {"52:54:00:AA:BB:01": ("network", {"network": "dr-front"}),
                        "52:54:00:aa:bb:02": ("network", {"network": "dr-db"}),
                        "52:54:00:aa:bb:03": ("network", {"network": "seawall-test-app"})}
    front = nics["52:54:00:AA:BB:01"]
    assert front.find("target") is None and front.find("filterref") is None
    assert front.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert front.find("boot").get("order") == "2"  # type: ignore[union-attr]
    assert nics["52:54:00:aa:bb:02"].find("virtualport") is None

    assert devices.find("hostdev") is None and devices.find("filesystem") is None
    [serial] = devices.findall("serial")
    assert serial.get("type") == "pty" and serial.find("source") is None
    assert serial.find("log").attrib == {  # type: ignore[union-attr]
        "file": "/srv/seawall/tests/web-test-app.console.log", "append": "on"}
    assert devices.find("console") is None  # libvirt shows serial 0 as the console itself
    channel = devices.find("channel")
    assert channel is not None and channel.find("source") is None
    assert channel.find("target").get("name") == "org.qemu.guest_agent.0"  # type: ignore[union-attr]
    graphics = devices.find("graphics")
    assert graphics is not None and graphics.get("autoport") == "yes"
    assert "listen" not in graphics.attrib and graphics.find("listen") is None

    notes = "\n".join(recovered.notes)
    for expected in ("accelerator 'qemu'", "host-passthrough", "loader", "NVRAM",
                     "CPU pinning", "cgroup partition", "static security label",
                     "cdrom sdb: /iso/debian.iso left out", "disk vdc left out",
                     "host device", "host directory", "serial on a host unix"):
        assert expected in notes, (expected, notes)
    assert "tools.iso" not in notes and "kernel" not in notes


def test_a_minimal_domain_gets_a_logged_console_and_its_accelerator_kept(
        tmp_path: Path) -> None:
    captured = ("<domain type='kvm'><name>tiny</name><memory>65536</memory>"
                "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
                "<source file='/a.img'/><target dev='vda'/></disk>"
                "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>"
                "</devices></domain>")
    target = RecoveryTarget(name="tiny-live-app", disks={"vda": NbdDisk(Path("/s"), "e")},
                            network_map={}, default_network="prod",
                            console_log=Path("/l.log"), mark={})
    recovered = recovery_domain(captured, target, lambda path: False)
    validate(recovered.xml, "domain", tmp_path)
    root = ET.fromstring(recovered.xml)
    assert root.get("type") == "kvm" and recovered.notes == () and not recovered.guest_agent
    serial = root.find("devices/serial")
    assert serial is not None and serial.find("log").get("file") == "/l.log"  # type: ignore[union-attr]
    assert serial.find("target").get("port") == "0"  # type: ignore[union-attr]
    assert root.find("devices/interface/source").get("network") == "prod"  # type: ignore[union-attr]


def test_refusals_name_what_is_wrong() -> None:
    no_default = RecoveryTarget(name="web-live-app", disks={}, network_map={"prod": "dr"},
                                default_network=None, console_log=Path("/l"), mark={})
    with pytest.raises(InvalidInput, match=r"NIC 52:54:00:aa:bb:02 on 'br-db' .*--network-map"):
        recovery_domain(CAPTURED, no_default, lambda path: True)
    missing_disk = RecoveryTarget(name="x", disks={"vdz": NbdDisk(Path("/s"), "e")},
                                  network_map={}, default_network="n", console_log=Path("/l"),
                                  mark={})
    with pytest.raises(InvalidInput, match="no disk vdz"):
        recovery_domain(CAPTURED, missing_disk, lambda path: True)
    with pytest.raises(CorruptData, match="does not parse"):
        recovery_domain("<domain><name>", TARGET, lambda path: True)
    with pytest.raises(CorruptData, match="<network>, not a <domain>"):
        recovery_domain(isolated_network_xml("n"), TARGET, lambda path: True)


def test_the_isolated_network_has_no_forward_no_address_and_validates(tmp_path: Path) -> None:
    text = isolated_network_xml("seawall-test-app & co")
    validate(text, "network", tmp_path)
    network = ET.fromstring(text)
    assert network.findtext("name") == "seawall-test-app & co"
    assert network.find("forward") is None and network.find("ip") is None
    assert network.find("bridge") is not None


def test_the_boot_plan_follows_the_boot_order_then_names() -> None:
    order = [{"name": "db", "delay_s": 30.0}, {"name": "db-vda", "delay_s": 5.0},
             {"name": "gone", "delay_s": 1.0}, {"name": "web"}]
    assert boot_plan(["web", "cache", "db", "api"], order) == [
        ("db", 30.0), ("web", 0.0), ("api", 0.0), ("cache", 0.0)]
    assert boot_plan([], order) == []


def test_a_clone_definition_points_at_its_files_and_keeps_its_networks(
        tmp_path: Path) -> None:
    target = RecoveryTarget(
        name="web-clone-monday", disks={"vda": FileDisk(Path("/c/monday/web-vda.qcow2"),
                                                        "qcow2")},
        network_map={"prod": "dr-front"}, default_network=None, keep_unmapped_nics=True,
        console_log=Path("/c/monday/web.console.log"), mark={"kind": "clone"})
    recovered = recovery_domain(CAPTURED, target, lambda path: True)
    validate(recovered.xml, "domain", tmp_path)
    devices = ET.fromstring(recovered.xml).find("devices")
    assert devices is not None
    [vda] = [d for d in devices.findall("disk")
             if d.find("target").get("dev") == "vda"]  # type: ignore[union-attr]
    assert vda.get("type") == "file"
    assert vda.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert vda.find("source").attrib == {"file": "/c/monday/web-vda.qcow2"}  # type: ignore[union-attr]
    assert "vdb" not in {d.find("target").get("dev")  # type: ignore[union-attr]
                         for d in devices.findall("disk")}  # not in this clone
    sources = {n.find("mac").get("address"): (n.get("type"), n.find("source").attrib)  # type: ignore[union-attr]
               for n in devices.findall("interface")}
    assert sources["52:54:00:AA:BB:01"] == ("network", {"network": "dr-front"})
    assert sources["52:54:00:aa:bb:02"] == ("bridge", {"bridge": "br-db"})  # as captured
    assert all(n.find("target") is None for n in devices.findall("interface"))
