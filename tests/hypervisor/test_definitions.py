"""A captured definition read back (``seawall.hypervisor.definitions``): disks with the
group volume holding each, and NICs, for both adapters' formats."""

from __future__ import annotations

import json

import pytest

from seawall.errors import CorruptData
from seawall.hypervisor.definitions import describe
from seawall.wire.records import VmConfig

DOMAIN = """<domain type='qemu'><name>web</name><uuid>u1</uuid><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/var/lib/libvirt/images/web.qcow2'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
<interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/>
<model type='virtio'/></interface></devices></domain>"""


def test_a_libvirt_definition_lists_its_disks_with_their_volumes_and_its_nics() -> None:
    shown = describe(VmConfig("u1", "web", "libvirt-xml", DOMAIN, (("vda", "web-vda"),)))
    assert shown["disks"] == [
        {"target": "vda", "source": "/var/lib/libvirt/images/web.qcow2", "format": "qcow2",
         "volume": "web-vda"},
        {"target": "sda", "source": "", "format": "raw", "volume": None}]
    assert shown["nics"] == [{"kind": "network", "source": "default",
                              "mac": "52:54:00:aa:bb:cc", "model": "virtio"}]


def test_a_qmp_definition_reads_like_the_adapter_inventory() -> None:
    view = {"query-block": [{"device": "drive-vda",
                             "qdev": "/machine/peripheral/vda/virtio-backend",
                             "inserted": {"node-name": "n1", "drv": "raw", "ro": False,
                                          "file": "/images/vda.raw",
                                          "image": {"virtual-size": 1024}}}],
            "query-rx-filter": [{"name": "net0", "main-mac": "52:54:00:12:34:56"}],
            "info network": "net0: index=0,type=nic,model=virtio-net-pci,"
                            "macaddr=52:54:00:12:34:56\r\n"
                            " \\ n0: index=0,type=user,net=10.0.2.0\r\n"}
    shown = describe(VmConfig("u2", "vm1", "qmp-json", json.dumps(view), (("vda", "vm1-vda"),)))
    assert [(d["target"], d["volume"]) for d in shown["disks"]] == [("vda", "vm1-vda")]
    assert [nic["mac"] for nic in shown["nics"]] == ["52:54:00:12:34:56"]


def test_a_definition_that_does_not_read_is_corrupt_data() -> None:
    with pytest.raises(CorruptData, match="VM web"):
        describe(VmConfig("u1", "web", "libvirt-xml", "<domain"))
    with pytest.raises(CorruptData, match="VM web"):
        describe(VmConfig("u1", "web", "qmp-json", "{"))
    with pytest.raises(CorruptData, match="unknown definition format"):
        describe(VmConfig("u1", "web", "vmx", ""))
