"""Coordinated checkpoints at the agent: markers, held acknowledgements, seals, aborts.

Real protected groups over real volume files, served by the agent's NBD front end and
written by a real NBD client in a thread; the other members of a round are in-process
(the lead calls them through the ``Member`` interface; the HTTP one is covered end to end).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.agent.protect import coordination
from seawall.agent.protect.coordination import Coordinator, MemberHold
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.quiesce import Quiescer
from seawall.agent.protect.volumes import FileVolume
from seawall.contract.agent import Coordination, GroupVolume, ProtectionSpec
from seawall.errors import NotReady, PeerError
from seawall.nbd import NbdClient
from seawall.sync.digests import block_digests
from seawall.wire.records import Record, RecordKind
from support.loop_thread import LoopThread

T = TypeVar("T")
SIZE_BYTES = 1 << 20


class EmptyReplica:
    """The recovery site of a first sync: its replica reads as zeros."""

    async def digests(self, volume: int, offset: int, length: int, block_bytes: int) -> bytes:
        return block_digests(bytes(length), block_bytes)


class LocalMember:
    """A member in the same process, called as the lead calls a remote one."""

    def __init__(self, agent: str, hold: MemberHold, fail_prepare: bool = False) -> None:
        self.agent = agent
        self.hold = hold
        self.fail_prepare = fail_prepare  # and probes: the member's host is gone
        self.aborted: list[int] = []
        self.probes = 0

    async def prepare(self, name: str, tagged: bool, quiesce: bool = False) -> int:
        if self.fail_prepare:
            raise PeerError(f"member agent {self.agent} unreachable: test")
        return (await self.hold.prepare(name, tagged, quiesce)).seq

    async def release(self, marker_seq: int, group_checkpoint: int) -> bool:
        return self.hold.release(marker_seq, group_checkpoint)

    async def abort(self, marker_seq: int) -> None:
        self.aborted.append(marker_seq)
        self.hold.abort(marker_seq)

    async def probe(self) -> None:
        self.probes += 1
        if self.fail_prepare:
            raise PeerError(f"member agent {self.agent} unreachable: test")

    async def close(self) -> None:
        return None


class Members:
    """Two member agents' groups ("a" leads, "b" follows), protecting, served over NBD."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = LoopThread()
        self.socket_path = str(tmp_path / "nbd.sock")
        self.volumes: dict[str, FileVolume] = {}
        self.groups: dict[str, ProtectedGroup] = {}
        for name in ("a", "b"):
            path = tmp_path / f"{name}.raw"
            path.write_bytes(bytes(SIZE_BYTES))
            self.volumes[name] = FileVolume(name, path)
        self.loop.run(self._start(tmp_path))
        self.holds = {name: self.loop.run(self._hold(name)) for name in self.groups}

    async def _start(self, tmp_path: Path) -> None:
        for name, volume in self.volumes.items():
            spec = ProtectionSpec(
                group_id=f"g.{name}", name="app", target_host="127.0.0.1", target_port=1,
                volumes=[GroupVolume(index=0, name=name, size_bytes=SIZE_BYTES)],
                coordination=Coordination(group_id="g", lead=name == "a"))
            group = ProtectedGroup(spec, [volume], tmp_path / f"state-{name}",
                                   buffer_limit_bytes=64 << 20)
            group.on_connected(0, EmptyReplica())
            self.groups[name] = group
        while not all(g.protecting for g in self.groups.values()):
            await asyncio.sleep(0.01)
        self.frontend = NbdFrontend(self)
        await self.frontend.start_unix(self.socket_path)

    async def _hold(self, name: str) -> MemberHold:
        state_dir = self.groups[name].checkpoints.path.parent
        return MemberHold(self.groups[name], Quiescer(None, state_dir / "frozen.json"))

    # BackendCatalog
    def backend(self, name: str) -> ExportBackend | None:
        return self.volumes.get(name)

    def names(self) -> list[str]:
        return list(self.volumes)

    def uri(self, name: str) -> str:
        return f"nbd+unix:///{name}?socket={self.socket_path}"

    def records(self, name: str) -> list[Record]:
        async def unacked() -> list[Record]:
            return list(self.groups[name].stream.unacked())
        return self.loop.run(unacked())

    def close(self) -> None:
        async def stop() -> None:
            for hold in self.holds.values():
                hold.close()
            await self.frontend.close()
            for group in self.groups.values():
                await group.stop()
        self.loop.run(stop())
        self.loop.stop()
        for volume in self.volumes.values():
            volume.close()


@pytest.fixture
def members(tmp_path: Path) -> Iterator[Members]:
    m = Members(tmp_path)
    yield m
    m.close()


def _write_in_thread(uri: str, offset: int, data: bytes) -> tuple[threading.Thread, list[float]]:
    """Write over NBD in a thread; the list gets the time the write was acknowledged."""
    done: list[float] = []

    def run() -> None:
        with NbdClient(uri) as client:
            client.write(offset, data)
            done.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def _after(records: list[Record], seq: int) -> list[Record]:
    return [r for r in records if r.seq > seq]


def test_a_round_marks_holds_and_seals_every_member(members: Members) -> None:
    lead = Coordinator(members.holds["a"], [LocalMember("b", members.holds["b"])])
    entry = members.loop.run(lead.checkpoint("nightly", tagged=True))
    for name in ("a", "b"):
        records = members.records(name)
        markers = [r for r in records if r.kind == RecordKind.CHECKPOINT]
        seals = [r for r in records if r.kind == RecordKind.SEAL]
        assert len(markers) == 1 and markers[0].payload == b"nightly"
        assert [(s.offset, s.length) for s in seals] == [(markers[0].seq, entry.seq)]
        assert not members.holds[name].gate.closed
    assert members.records("a")[-2].seq == entry.seq  # the lead's marker is the group's id


def test_a_write_taken_after_the_marker_is_acknowledged_only_at_release(
        members: Members) -> None:
    hold = members.holds["b"]
    marker = members.loop.run(hold.prepare("", tagged=False))
    thread, acked = _write_in_thread(members.uri("b"), 4096, b"x" * 4096)
    time.sleep(0.5)
    assert acked == []  # taken, not acknowledged: the gate holds it
    assert any(r.kind == RecordKind.WRITE and r.offset == 4096
               for r in _after(members.records("b"), marker.seq))
    released_s = time.monotonic()
    assert members.loop.run(_release(hold, marker.seq, 99))
    thread.join(5)
    assert acked and acked[0] >= released_s
    kinds = [r.kind for r in _after(members.records("b"), marker.seq)]
    assert kinds == [RecordKind.WRITE, RecordKind.SEAL]


async def _release(hold: MemberHold, marker_seq: int, group_checkpoint: int) -> bool:
    return hold.release(marker_seq, group_checkpoint)


def test_a_hold_that_runs_out_acknowledges_and_never_seals(
        members: Members, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordination, "HOLD_TIMEOUT_S", 0.3)
    hold = members.holds["b"]
    marker = members.loop.run(hold.prepare("", tagged=False))
    thread, acked = _write_in_thread(members.uri("b"), 0, b"y" * 512)
    thread.join(5)
    assert acked  # the hold ran out: writes are acknowledged again
    assert hold.hold_timeouts == 1
    assert not members.loop.run(_release(hold, marker.seq, 99))  # too late: no seal
    assert not any(r.kind == RecordKind.SEAL for r in members.records("b"))


def test_a_member_that_cannot_prepare_aborts_the_round(members: Members) -> None:
    dead = LocalMember("c", members.holds["b"], fail_prepare=True)
    lead = Coordinator(members.holds["a"], [dead])
    with pytest.raises(PeerError, match="member agent c"):
        members.loop.run(lead.checkpoint("", tagged=False))
    assert not members.holds["a"].gate.closed and members.holds["a"].held_seq is None
    assert not any(r.kind == RecordKind.SEAL for r in members.records("a"))
    assert lead.failed_rounds == 1 and "member agent c" in lead.last_error
    # The next round goes through: nothing was left held.
    lead.members = [LocalMember("b", members.holds["b"])]
    members.loop.run(lead.checkpoint("", tagged=False))


def test_an_unreachable_member_is_probed_before_any_gate_closes_again(
        members: Members) -> None:
    gone = LocalMember("b", members.holds["b"], fail_prepare=True)
    lead = Coordinator(members.holds["a"], [gone])
    with pytest.raises(PeerError):
        members.loop.run(lead.checkpoint("", tagged=False))
    assert lead.suspects == {"b"} and gone.probes == 0
    markers = len([r for r in members.records("a") if r.kind == RecordKind.CHECKPOINT])
    for _ in range(3):  # still gone: each round stops at the probe, no marker, no hold
        with pytest.raises(PeerError, match="member agent b"):
            members.loop.run(lead.checkpoint("", tagged=False))
    assert gone.probes == 3
    assert len([r for r in members.records("a") if r.kind == RecordKind.CHECKPOINT]) == markers
    gone.fail_prepare = False  # back: the probe passes and the round goes through
    entry = members.loop.run(lead.checkpoint("", tagged=False))
    assert lead.suspects == set() and gone.probes == 4
    assert any(r.kind == RecordKind.SEAL and r.length == entry.seq
               for r in members.records("b"))


def test_a_member_not_protecting_refuses_and_the_prepared_ones_are_released(
        members: Members) -> None:
    follower = LocalMember("b", members.holds["b"])
    members.groups["a"].tracking = True  # as after a buffer overflow: not protecting
    lead = Coordinator(members.holds["b"], [LocalMember("a", members.holds["a"])])
    with pytest.raises(NotReady):
        members.loop.run(lead.checkpoint("", tagged=False))
    assert not members.holds["b"].gate.closed
    assert lead.suspects == set()  # it answered (a refusal): nothing to probe next time
    members.groups["a"].tracking = False
    assert follower.aborted == []


def test_one_round_at_a_time_per_member(members: Members) -> None:
    hold = members.holds["b"]
    marker = members.loop.run(hold.prepare("", tagged=False))
    with pytest.raises(Exception, match="being taken already"):
        members.loop.run(hold.prepare("", tagged=False))
    members.loop.run(_release(hold, marker.seq, marker.seq))
