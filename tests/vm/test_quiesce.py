"""Application-consistent checkpoints with a real qemu-guest-agent in a real guest.

The session guest (``support.guests``) runs Debian's qemu-ga on its
``org.qemu.guest_agent.0`` channel, with a freeze hook printing ``sw-fsfreeze freeze|thaw
UPTIME`` on its console; the shut-off guest stands for a VM whose agent does not answer.
Freezes go through libvirt (``LibvirtHypervisor.freeze``); the guest agent's own
``guest-fsfreeze-status`` is read through libvirt-qemu's agent command, out of band.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from seawall.agent.protect import quiesce
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.quiesce import Quiescer, quiesced_checkpoint
from seawall.agent.protect.volumes import FileVolume
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.hypervisor.libvirt_adapter import LibvirtHypervisor
from seawall.sync.digests import block_digests
from seawall.wire.records import Record, RecordKind, consistency_name
from support.guests import Guest, SessionGuests


def fsfreeze_status(guests: SessionGuests, guest: Guest) -> str:
    import libvirt_qemu

    answer = libvirt_qemu.qemuAgentCommand(guests.host.domain(guest),
                                           '{"execute": "guest-fsfreeze-status"}', 10, 0)
    status: str = json.loads(answer)["return"]
    return status


def freeze_spans_s(guest: Guest) -> list[float]:
    """How long each freeze lasted, by the guest's own clock (its freeze hook)."""
    events = re.findall(r"^sw-fsfreeze (freeze|thaw) ([\d.]+)", guest.console.text(),
                        re.MULTILINE)
    spans, frozen_at = [], None
    for kind, uptime in events:
        if kind == "freeze":
            frozen_at = float(uptime)
        elif frozen_at is not None:
            spans.append(float(uptime) - frozen_at)
            frozen_at = None
    return spans


def wait_agent(guests: SessionGuests) -> None:
    guests.host.wait_guest_agent(guests.running)


def test_quiesced_freeze_is_application_and_thawed(guests: SessionGuests,
                                                    tmp_path: Path) -> None:
    wait_agent(guests)
    running = guests.running
    record = tmp_path / "frozen.json"

    async def scenario() -> tuple[str, list[str], bool, int]:
        hypervisor = await LibvirtHypervisor.open(guests.uri)
        try:
            quiescer = Quiescer(hypervisor, record)
            async with quiescer.frozen([running.uuid]) as freeze:
                recorded = json.loads(record.read_text()) == [running.uuid]
                hooks = len(freeze_spans_s(running))
                consistency = freeze.consistency()
            return consistency, freeze.notes(), recorded, hooks
        finally:
            await hypervisor.close()

    counter_before = running.console.counter()
    spans_before = len(freeze_spans_s(running))
    consistency, notes, recorded, spans_inside = asyncio.run(scenario())
    assert consistency == "application" and notes == [] and recorded
    assert spans_inside == spans_before  # frozen, not thawed yet, while the marker goes in
    assert fsfreeze_status(guests, running) == "thawed"
    assert not record.exists()  # thawed: nothing left for a restart to thaw
    spans = freeze_spans_s(running)
    assert len(spans) == spans_before + 1 and spans[-1] < quiesce.FREEZE_LIMIT_S
    running.console.wait_counter_past(counter_before + 1)  # the guest writes on
    assert running.console.io_errors() == []


def test_no_guest_agent_is_crash_with_a_note(guests: SessionGuests, tmp_path: Path) -> None:
    """The shut-off guest has no agent answering: crash-consistent, its uuid in a note."""
    async def scenario() -> tuple[str, list[str]]:
        hypervisor = await LibvirtHypervisor.open(guests.uri)
        try:
            quiescer = Quiescer(hypervisor, tmp_path / "frozen.json")
            async with quiescer.frozen([guests.stopped.uuid]) as freeze:
                consistency = freeze.consistency()
            return consistency, freeze.notes()
        finally:
            await hypervisor.close()

    consistency, notes = asyncio.run(scenario())
    assert consistency == "crash"
    assert len(notes) == 1 and guests.stopped.uuid in notes[0] and "no guest agent" in notes[0]
    assert not (tmp_path / "frozen.json").exists()


def test_a_hung_round_is_thawed_by_the_timer(guests: SessionGuests, tmp_path: Path) -> None:
    """The freeze is never ended by its caller (a round that hangs): the backstop timer
    thaws the guest within the limit, and a marker after it is crash-consistent."""
    wait_agent(guests)
    running = guests.running
    spans_before = len(freeze_spans_s(running))

    async def scenario() -> tuple[str, str, float]:
        hypervisor = await LibvirtHypervisor.open(guests.uri)
        try:
            quiescer = Quiescer(hypervisor, tmp_path / "frozen.json")
            freeze = await quiescer.freeze([running.uuid])
            before = freeze.consistency()
            while not freeze.thawed:  # the caller hangs; only the timer thaws
                await asyncio.sleep(0.1)
            return before, freeze.consistency(), freeze.frozen_s()
        finally:
            await hypervisor.close()

    started_s = time.monotonic()
    before, after, frozen_s = asyncio.run(scenario())
    assert before == "application" and after == "crash"
    assert quiesce.THAW_AT_S <= frozen_s < quiesce.FREEZE_LIMIT_S
    assert time.monotonic() - started_s < quiesce.FREEZE_LIMIT_S + 2
    assert fsfreeze_status(guests, running) == "thawed"
    spans = freeze_spans_s(running)
    assert len(spans) == spans_before + 1 and spans[-1] < quiesce.FREEZE_LIMIT_S
    assert not (tmp_path / "frozen.json").exists()


def test_a_restarted_agent_thaws_what_a_dead_one_froze(guests: SessionGuests,
                                                         tmp_path: Path) -> None:
    """An agent killed while a guest is frozen: the record it wrote before freezing makes
    the next start thaw it (qemu-ga has no auto-thaw on Linux)."""
    wait_agent(guests)
    running = guests.running
    record = tmp_path / "frozen.json"
    spans_before = len(freeze_spans_s(running))

    async def scenario() -> list[str]:
        hypervisor = await LibvirtHypervisor.open(guests.uri)
        try:
            record.write_text(json.dumps([running.uuid]))  # as the dead agent left it
            assert await hypervisor.freeze(running.uuid, quiesce.AGENT_TIMEOUT_S) == 0
            return await Quiescer(hypervisor, record).recover()
        finally:
            await hypervisor.close()

    assert asyncio.run(scenario()) == [running.uuid]
    assert not record.exists()
    assert len(freeze_spans_s(running)) == spans_before + 1  # frozen, then thawed
    assert fsfreeze_status(guests, running) == "thawed"


class EmptyReplica:
    """The recovery site of a first sync: its replica reads as zeros."""

    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        return block_digests(bytes(length), block_bytes)


def test_a_quiesced_marker_in_the_stream_says_application(guests: SessionGuests,
                                                           tmp_path: Path) -> None:
    """A group whose volume belongs to the guest (a stand-in for the capture sink of its
    disk, which carries ``vm_uuid`` the same way): the CHECKPOINT record carries the
    consistency, and so does the checkpoint log."""
    wait_agent(guests)
    path = tmp_path / "sink.raw"
    path.write_bytes(bytes(1 << 20))
    volume = FileVolume("vda", path)
    volume.vm_uuid = guests.running.uuid  # type: ignore[attr-defined]
    spec = ProtectionSpec(group_id="g", name="app", target_host="127.0.0.1", target_port=1,
                          volumes=[GroupVolume(index=0, name="vda", size_bytes=1 << 20)])

    async def scenario() -> tuple[list[Record], list[str], str]:
        hypervisor = await LibvirtHypervisor.open(guests.uri)
        group = ProtectedGroup(spec, [volume], tmp_path / "state", buffer_limit_bytes=8 << 20)
        try:
            group.on_connected(0, EmptyReplica())
            while not group.protecting:
                await asyncio.sleep(0.02)
            quiescer = Quiescer(hypervisor, tmp_path / "frozen.json")
            entry, notes = await quiesced_checkpoint(group, quiescer, "frozen")
            plain = group.tag_checkpoint("plain")
            markers = [r for r in group.stream.unacked() if r.kind == RecordKind.CHECKPOINT]
            assert [r.seq for r in markers] == [entry.seq, plain.seq]
            return markers, notes, entry.consistency
        finally:
            await group.stop()
            await hypervisor.close()

    spans_before = len(freeze_spans_s(guests.running))
    markers, notes, consistency = asyncio.run(scenario())
    volume.close()
    assert consistency == "application" and notes == []
    assert [consistency_name(r.offset) for r in markers] == ["application", "crash"]
    assert len(freeze_spans_s(guests.running)) == spans_before + 1
    logged = [json.loads(line) for line in (tmp_path / "state" / "checkpoints.jsonl")
              .read_text().splitlines()]
    assert [(c["name"], c["consistency"]) for c in logged] == [("frozen", "application"),
                                                              ("plain", "crash")]
