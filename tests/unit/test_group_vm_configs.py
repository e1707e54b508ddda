"""The protected group's VM configurations (``ProtectedGroup.set_vm_config``): one goes into
the stream when captured while streaming, is kept while tracking, and every sync window
opens with the newest of each VM, so a dropped stream loses none."""

from __future__ import annotations

import asyncio
from pathlib import Path

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.volumes import FileVolume, create_volume_file
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.wire.records import Record, RecordKind, VmConfig, decode_vm_config

MIB = 1 << 20


class NoDigests:
    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        raise AssertionError("a full sync asks for no digests")


def configs(records: list[Record]) -> list[str]:
    return [decode_vm_config(r.payload, r.seq, r.time_ns).definition
            for r in records if r.kind == RecordKind.VM_CONFIG]


def test_configurations_survive_tracking_and_open_every_sync_window(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))


async def _scenario(tmp_path: Path) -> None:
    create_volume_file(tmp_path / "a.raw", MIB)
    spec = ProtectionSpec(group_id="g", name="app",
                          volumes=[GroupVolume(index=0, name="a", size_bytes=MIB)],
                          target_host="127.0.0.1", target_port=1)
    group = ProtectedGroup(spec, [FileVolume("a", tmp_path / "a.raw")], tmp_path / "state",
                           64 * MIB)
    group.set_vm_config(VmConfig("u1", "web", "libvirt-xml", "<one/>"))  # tracking: kept
    assert group.stream.record_count == 0
    group.on_connected(0, NoDigests())
    records = group.stream.unacked()
    assert records[0].kind == RecordKind.SYNC_BEGIN and configs(records) == ["<one/>"]
    while group.syncing:
        await asyncio.sleep(0.01)
    group.set_vm_config(VmConfig("u1", "web", "libvirt-xml", "<two/>"))  # streaming: in
    group.set_vm_config(VmConfig("u2", "db", "libvirt-xml", "<db/>"))
    assert configs(group.stream.unacked()) == ["<one/>", "<two/>", "<db/>"]
    checkpoint = group.tag_checkpoint("c").seq
    assert max(r.seq for r in group.stream.unacked()
               if r.kind == RecordKind.VM_CONFIG) < checkpoint

    # The recovery site loses what it acknowledged: the stream is dropped and the next
    # window carries the newest configuration of each VM.
    group.acknowledge(group.stream.last_seq)
    group.on_disconnected("test")
    group.on_connected(0, NoDigests())
    records = group.stream.unacked()
    assert records[0].kind == RecordKind.SYNC_BEGIN
    assert sorted(configs(records)) == ["<db/>", "<two/>"]
    await group.stop()
