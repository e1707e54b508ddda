"""A libvirt VM's configuration follows its data (``agent.protect.vm_watch``) on a real libvirtd.

A shut-off domain of its own (the session guests are left alone) is a protected group's
VM: its persistent definition is captured into the group's stream when the watch starts;
redefined (``defineXML``, as ``virsh edit`` does) it is captured again on libvirt's
``defined`` event alone (the periodic check is an hour away), without the VNC password it
carries (libvirt 9.0 puts it in the inactive XML even without ``VIR_DOMAIN_XML_SECURE``);
undefined, the watch reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.sink import SinkVolume
from seawall.agent.protect.vm_watch import VmWatch
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.hypervisor.libvirt_adapter import LibvirtHypervisor
from seawall.wire.records import RecordKind, VmConfig, decode_vm_config
from support.guests import GuestDisk, SessionGuests, domain_xml, make_disk

pytestmark = pytest.mark.e2e

DISK_BYTES = 1 << 20
EVENT_TIMEOUT_S = 60.0


class NoDigests:
    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        raise AssertionError("a sink's sync asks for no digests")


def captured(group: ProtectedGroup) -> list[VmConfig]:
    return [decode_vm_config(r.payload, r.seq, r.time_ns) for r in group.stream.unacked()
            if r.kind == RecordKind.VM_CONFIG]


async def wait_for(condition: object, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + EVENT_TIMEOUT_S
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


def test_definition_captured_at_start_and_on_redefine_without_secrets(
        guests: SessionGuests, tmp_path: Path) -> None:
    name = f"{guests.host.prefix}-config"
    disk = make_disk(guests.host.workdir / "config-vda.raw", DISK_BYTES)
    first_xml = domain_xml(name, guests.host.image, [GuestDisk("vda", disk)],
                           guests.host.workdir / "config.log")
    second_xml = first_xml.replace("<memory unit='MiB'>192</memory>",
                                   "<memory unit='MiB'>160</memory>").replace(
        "</devices>", "<graphics type='vnc' passwd='s3cr3tpw'/></devices>")
    domain = guests.host.connection.defineXML(first_xml)
    uuid = domain.UUIDString()
    second_xml = second_xml.replace("</name>", f"</name><uuid>{uuid}</uuid>", 1)
    assert "160" in second_xml and "s3cr3tpw" in second_xml

    async def scenario() -> None:
        hypervisor = await LibvirtHypervisor.open(guests.uri)
        spec = ProtectionSpec(group_id="g", name="app", target_host="127.0.0.1",
                              target_port=1,
                              volumes=[GroupVolume(index=0, name="config-vda",
                                                   size_bytes=DISK_BYTES)])
        group = ProtectedGroup(spec, [SinkVolume("config-vda", DISK_BYTES, uuid, "vda")],
                               tmp_path / "state", 64 << 20)
        group.on_connected(0, NoDigests())  # positioned: configurations go in the stream
        watch = VmWatch(group, hypervisor, check_interval_s=3600)
        watch.start()
        try:
            await wait_for(lambda: len(captured(group)) == 1, "no configuration at start")
            [first] = captured(group)
            assert (first.uuid, first.name, first.format) == (uuid, name, "libvirt-xml")
            assert first.volumes == (("vda", "config-vda"),)
            assert ET.fromstring(first.definition).findtext("memory") == "196608"  # KiB
            await asyncio.to_thread(guests.host.connection.defineXML, second_xml)
            await wait_for(lambda: len(captured(group)) == 2, "redefining was not captured")
            second = captured(group)[1]
            root = ET.fromstring(second.definition)
            assert root.findtext("memory") == "163840"
            [graphics] = root.iter("graphics")
            assert graphics.get("type") == "vnc" and "passwd" not in graphics.attrib
            assert "s3cr3tpw" not in second.definition  # libvirt put it in: taken out
            assert watch.status() == []
            await asyncio.to_thread(domain.undefine)
            await wait_for(lambda: watch.status() != [], "undefining was not reported")
            [problem] = watch.status()
            assert problem["subject"] == "defined" and "undefined" in problem["message"]
        finally:
            await watch.stop()
            await group.stop()
            await hypervisor.close()

    try:
        asyncio.run(scenario())
    finally:
        with contextlib.suppress(Exception):  # undefined by the test already
            guests.host.connection.lookupByUUIDString(uuid).undefine()
