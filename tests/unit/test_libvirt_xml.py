"""The libvirt adapter's pure core: what a domain XML says of disks, NICs and mirrors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from seawall.errors import ProtocolViolation
from seawall.hypervisor.base import NicInfo
from seawall.hypervisor.libvirt_xml import (
    mirror_target_xml,
    mirrors_ready,
    parse_domain,
    without_secrets,
)

DOMAIN = """<domain type='qemu' id='3'>
  <name>web &amp; db</name>
  <uuid>0d6f6c5e-2f4a-4b8e-9a51-3c1f2e0b7a10</uuid>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web.qcow2'/><target dev='vda' bus='virtio'/>
      <mirror type='network' job='copy' ready='yes'><format type='raw'/></mirror></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/data'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='disk'><source file='/srv/probed.img'/>
      <target dev='vdc' bus='virtio'/></disk>
    <disk type='volume' device='disk'><driver name='qemu' type='raw'/>
      <source pool='default' volume='logs'/><target dev='vdd' bus='virtio'/>
      <mirror type='file' job='copy'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/debian.iso'/>
      <target dev='sda' bus='sata'/><readonly/></disk>
    <disk type='file' device='floppy'><target dev='fda' bus='fdc'/></disk>
    <disk type='block' device='lun'><source dev='/dev/sdx'/><target dev='sdb' bus='scsi'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/srv/cluster.img'/><target dev='vde' bus='virtio'/><shareable/></disk>
    <disk type='file' device='disk'><source file='/srv/ro.img'/>
      <target dev='vdf' bus='virtio'/><readonly/></disk>
    <disk type='network' device='disk'><driver name='qemu' type='raw'/>
      <source protocol='rbd' name='pool/image'><host name='ceph1' port='6789'/></source>
      <target dev='vdg' bus='virtio'/></disk>
    <interface type='network'><mac address='52:54:00:aa:bb:01'/><source network='default'/>
      <model type='virtio'/></interface>
    <interface type='bridge'><mac address='52:54:00:aa:bb:02'/><source bridge='br0'/>
      <model type='e1000e'/></interface>
    <interface type='direct'><mac address='52:54:00:aa:bb:03'/>
      <source dev='eth0' mode='bridge'/></interface>
    <interface type='user'><mac address='52:54:00:aa:bb:04'/></interface>
  </devices>
</domain>"""


def test_disks_their_sources_formats_and_skip_reasons() -> None:
    domain = parse_domain(DOMAIN)
    assert (domain.name, domain.uuid) == ("web & db", "0d6f6c5e-2f4a-4b8e-9a51-3c1f2e0b7a10")
    disks = {disk.target: disk for disk in domain.disks}
    assert [(d.source, d.format, d.skip_reason, d.path) for d in domain.disks[:4]] == [
        ("/var/lib/libvirt/images/web.qcow2", "qcow2", None, "/var/lib/libvirt/images/web.qcow2"),
        ("/dev/vg0/data", "raw", None, "/dev/vg0/data"),
        ("/srv/probed.img", "raw", None, "/srv/probed.img"),  # no <driver type>: raw
        ("default/logs", "raw", None, None),  # a pool's volume: mirrored, measured by libvirt
    ]
    reasons = {target: disks[target].skip_reason or "" for target in
               ("sda", "fda", "sdb", "vde", "vdf", "vdg")}
    assert "CD-ROM" in reasons["sda"] and "floppy" in reasons["fda"]
    assert "LUN" in reasons["sdb"] and "shareable" in reasons["vde"]
    assert "read-only" in reasons["vdf"]
    assert "network disk (rbd:pool/image)" in reasons["vdg"]
    assert disks["fda"].source == "" and disks["vdg"].path is None


def test_nics() -> None:
    assert parse_domain(DOMAIN).nics == (
        NicInfo("network", "default", "52:54:00:aa:bb:01", "virtio"),
        NicInfo("bridge", "br0", "52:54:00:aa:bb:02", "e1000e"),
        NicInfo("direct", "eth0", "52:54:00:aa:bb:03", ""),
        NicInfo("user", "", "52:54:00:aa:bb:04", ""),
    )


def test_mirrors_ready_reads_libvirts_own_flag() -> None:
    assert mirrors_ready(DOMAIN) == {"vda": True, "vdd": False}


def test_mirror_target_escapes_what_it_is_given() -> None:
    text = mirror_target_xml(Path("/run/seawall/it's & <here>.sock"), "vm'1\"&<x>")
    disk = ET.fromstring(text)
    source = disk.find("source")
    assert disk.get("type") == "network" and disk.find("driver").get("type") == "raw"
    assert source is not None and source.get("protocol") == "nbd"
    assert source.get("name") == "vm'1\"&<x>"
    host = source.find("host")
    assert host is not None and host.get("transport") == "unix"
    assert host.get("socket") == "/run/seawall/it's & <here>.sock"


def test_a_domain_xml_that_does_not_parse() -> None:
    with pytest.raises(ProtocolViolation, match="does not parse"):
        parse_domain("<domain><name>x</domain>")


def test_console_passwords_are_taken_out_and_other_xml_kept_verbatim() -> None:
    assert without_secrets(DOMAIN) is DOMAIN  # nothing secret: as libvirt gave it
    secret = ("<domain type='qemu'><name>a</name><devices><graphics type='vnc' port='-1' "
              "passwd='s3cr3tpw' passwdValidTo='2030-01-01T00:00:00'/><graphics "
              "type='spice' passwd='other'/></devices></domain>")
    cleaned = without_secrets(secret)
    assert "s3cr3tpw" not in cleaned and "other" not in cleaned
    assert parse_domain(cleaned).name == "a" and "passwdValidTo" in cleaned
