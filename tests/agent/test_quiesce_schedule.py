"""The periodic quiesced checkpoints of a one-agent group (``--quiesce-every``)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from seawall.agent.protect.coordination import CoordinatedGroups
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.quiesce import Quiescer
from seawall.agent.protect.quiesce_schedule import QuiesceSchedule
from seawall.agent.protect.volumes import FileVolume
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.sync.digests import block_digests

SIZE_BYTES = 1 << 20


class EmptyReplica:
    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        return block_digests(bytes(length), block_bytes)


def test_a_set_interval_takes_untagged_quiesced_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(bytes(SIZE_BYTES))
    volume = FileVolume("disk0", path)
    spec = ProtectionSpec(group_id="g", name="app", target_host="127.0.0.1", target_port=1,
                          checkpoint_interval_s=3600.0,
                          volumes=[GroupVolume(index=0, name="disk0", size_bytes=SIZE_BYTES)])

    async def scenario() -> tuple[int, list[tuple[str, bool, str]]]:
        group = ProtectedGroup(spec, [volume], tmp_path / "state", buffer_limit_bytes=8 << 20)
        group.on_connected(0, EmptyReplica())
        while not group.protecting:
            await asyncio.sleep(0.02)
        quiescer = Quiescer(None, tmp_path / "frozen.json")
        schedule = QuiesceSchedule(lambda: [group], quiescer,
                                   CoordinatedGroups(lambda _pem: None, quiescer))  # type: ignore[arg-type, return-value]
        task = asyncio.create_task(schedule.run())
        await asyncio.sleep(1.2)
        off = len(group.checkpoints.entries)  # quiesce_every_s 0: none taken
        group.spec.quiesce_every_s = 1.0  # as PATCH /protected/g does
        await asyncio.sleep(3.3)  # noticed at a tick, then due one interval later
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await group.stop()
        return off, [(c.name, c.tagged, c.consistency) for c in group.checkpoints.entries]

    off, taken = asyncio.run(scenario())
    volume.close()
    assert off == 0
    assert 1 <= len(taken) <= 3
    assert set(taken) == {("", False, "crash")}  # no VMs here: crash-consistent
