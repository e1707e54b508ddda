"""How the libvirt adapter finds the QEMU node of a disk to read (its pure parts)."""

from __future__ import annotations

import pytest

from seawall.errors import NotFound
from seawall.hypervisor.libvirt_reader import disk_alias, disk_node

LIVE = """<domain type='qemu' id='7'><name>web</name><devices>
  <disk type='file' device='disk'><source file='/a.raw' index='2'/>
    <target dev='vda' bus='virtio'/><mirror type='network' job='copy' ready='yes'/>
    <alias name='virtio-disk0'/></disk>
  <disk type='file' device='disk'><source file='/b.qcow2' index='1'/>
    <target dev='vdb' bus='virtio'/><alias name='virtio-disk1'/></disk>
  <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><alias name='ide0-1-0'/></disk>
</devices></domain>"""

# QEMU 7.2 under libvirt 9.0 during a block copy of vda (the mirror_top filter is implicit)
QUERY_BLOCK = [
    {"device": "", "qdev": "/machine/peripheral/virtio-disk0/virtio-backend",
     "inserted": {"node-name": "libvirt-2-format"}},
    {"device": "", "qdev": "/machine/peripheral/virtio-disk1/virtio-backend",
     "inserted": {"node-name": "libvirt-1-format"}},
    {"device": "", "qdev": "ide0-1-0"},  # empty CD-ROM: nothing inserted
]


def test_a_disk_is_found_by_its_alias_never_by_guessing_node_names() -> None:
    assert disk_alias(LIVE, "vdb") == "virtio-disk1"
    assert disk_node(QUERY_BLOCK, "web", "vda", disk_alias(LIVE, "vda")) == "libvirt-2-format"
    assert disk_node(QUERY_BLOCK, "web", "vdb", "virtio-disk1") == "libvirt-1-format"
    # virtio-disk1 must not match virtio-disk10's device, nor a disk with no alias anything
    with pytest.raises(NotFound, match="disk vdk"):
        disk_node([{"qdev": "/machine/peripheral/virtio-disk10/virtio-backend",
                    "inserted": {"node-name": "libvirt-9-format"}}], "web", "vdk", "virtio-disk1")
    assert disk_alias(LIVE, "vdz") is None
    with pytest.raises(NotFound, match=r"VM web.*disk vdz"):
        disk_node(QUERY_BLOCK, "web", "vdz", None)
    with pytest.raises(NotFound, match="disk hdc"):
        disk_node(QUERY_BLOCK, "web", "hdc", "ide0-1-0")
