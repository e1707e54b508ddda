"""Pure parts of --quiesce (timer policy, consistency marking, the record field) and the
guest-agent socket client against a real qemu-ga (on the host, its freeze commands
blocked: a host file system is never frozen)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from seawall.agent.protect import coordination, quiesce
from seawall.agent.protect.quiesce import consistency_of, notes_of, vms_of
from seawall.agent.protect.quiesce_schedule import due
from seawall.errors import PeerError
from seawall.hypervisor import guest_agent
from seawall.manager.groups.members import Member, join_checkpoints
from seawall.wire.records import (
    CONSISTENCY,
    checkpoint_record,
    consistency_name,
    validate_header,
)


def test_timer_policy_keeps_a_freeze_under_the_limit() -> None:
    assert quiesce.THAW_AT_S + quiesce.THAW_TIMEOUT_S + 1 <= quiesce.FREEZE_LIMIT_S
    assert quiesce.AGENT_TIMEOUT_S < quiesce.THAW_AT_S
    # a member's hold ends (and thaws) before the backstop has to
    assert coordination.HOLD_TIMEOUT_S < quiesce.THAW_AT_S


def test_consistency_marking() -> None:
    assert consistency_of({"a": 2, "b": 0}, expired=False) == "application"
    assert consistency_of({"a": 2, "b": None}, expired=False) == "crash"
    assert consistency_of({"a": 2}, expired=True) == "crash"
    assert consistency_of({}, expired=False) == "crash"
    assert notes_of({"a": 2, "b": None}, expired=False) == [
        f"VM b: no guest agent answered in {quiesce.AGENT_TIMEOUT_S:g} s: crash-consistent"]
    assert "thawed by the" in notes_of({"a": 1}, expired=True)[0]
    assert "no VMs" in notes_of({}, expired=False)[0]
    assert notes_of({"a": 1}, expired=False) == []


def test_vms_of_a_groups_volumes() -> None:
    class Sink:
        def __init__(self, vm_uuid: str) -> None:
            self.vm_uuid = vm_uuid

    assert vms_of([Sink("u2"), object(), Sink("u1"), Sink("u2")]) == ["u1", "u2"]


def test_checkpoint_record_carries_its_consistency() -> None:
    application = checkpoint_record(7, 1, "x", "application")
    assert application.offset == CONSISTENCY.index("application") == 1
    assert checkpoint_record(8, 1, "x").offset == 0
    validate_header(application.header())
    assert consistency_name(application.offset) == "application"
    assert consistency_name(0) == consistency_name(2) == "crash"  # unknown: the weaker claim


@pytest.fixture
def host_guest_agent(tmp_path: Path) -> Path:
    if shutil.which("qemu-ga") is None:
        pytest.skip("qemu-ga is not installed (Debian qemu-guest-agent; `make setup`)")
    path = tmp_path / "vm.qga"
    blocked = "guest-fsfreeze-freeze,guest-fsfreeze-freeze-list,guest-fsfreeze-thaw"
    process = subprocess.Popen(["qemu-ga", "-m", "unix-listen", "-p", str(path), "-b", blocked,
                                "-t", str(tmp_path), "-f", str(tmp_path / "qga.pid")],
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield path
    process.terminate()
    process.wait(10)


def test_guest_agent_client_with_a_real_qemu_ga(host_guest_agent: Path) -> None:
    async def scenario() -> None:
        status = await guest_agent.guest_command(host_guest_agent, "guest-fsfreeze-status", 5)
        assert status == "thawed"
        again = await guest_agent.guest_command(host_guest_agent, "guest-fsfreeze-status", 5)
        assert again == "thawed"  # one connection per call, synced each time
        with pytest.raises(PeerError, match="guest-fsfreeze-freeze"):
            await guest_agent.freeze(host_guest_agent, 5)  # blocked here: an error answer

    asyncio.run(scenario())


def test_guest_agent_client_no_agent(tmp_path: Path) -> None:
    assert guest_agent.qga_socket_for(Path("/var/run/qemu-server/101.qmp")) == Path(
        "/var/run/qemu-server/101.qga")
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.qga"))
    silent.listen()  # accepts, never answers

    async def scenario() -> None:
        assert await guest_agent.freeze(tmp_path / "missing.qga", 1) is None
        started_s = time.monotonic()
        assert await guest_agent.freeze(tmp_path / "silent.qga", 0.5) is None
        assert time.monotonic() - started_s < 2

    try:
        asyncio.run(scenario())
    finally:
        silent.close()


def test_quiesce_schedule_is_due_one_interval_after_it_is_set_or_changed() -> None:
    assert due(0.0, None, 100.0) == (False, 100.0)  # off
    assert due(60.0, None, 100.0) == (False, 100.0)  # set now: counts from now
    assert due(60.0, (60.0, 100.0), 159.0) == (False, 100.0)
    assert due(60.0, (60.0, 100.0), 160.0) == (True, 100.0)
    assert due(3600.0, (60.0, 100.0), 500.0) == (False, 500.0)  # changed: from now again


def test_a_group_checkpoint_spanning_agents_is_application_only_if_every_marker_is() -> None:
    members = [Member("prod", "lead"), Member("host2", "other")]

    def marker(seq: int, sealed_as: int, consistency: str) -> dict[str, object]:
        return {"id": seq, "time_ns": seq, "name": "", "consistent": True,
                "sealed_as": sealed_as, "consistency": consistency}

    lists = {"lead": [marker(10, 10, "application"), marker(20, 20, "application")],
             "other": [marker(4, 10, "application"), marker(7, 20, "crash")]}
    joined = join_checkpoints(members, lists)
    assert [(c["id"], c["consistency"]) for c in joined] == [(10, "application"),
                                                               (20, "crash")]


def test_guest_agent_client_skips_an_earlier_syncs_delimited_answer(tmp_path: Path) -> None:
    """A VM's agent channel keeps what an earlier, timed-out client left: here the
    delimited answer of an earlier sync (0xFF, then its line) comes before ours, whose
    line then starts with our 0xFF."""
    async def agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'\xff{"return": 12345}\n')  # left by an earlier client
        while line := (await reader.readline()).lstrip(b"\xff"):
            request = json.loads(line)
            if request["execute"] == "guest-sync-delimited":
                writer.write(b"\xff" + json.dumps({"return": request["arguments"]["id"]})
                             .encode() + b"\n")
            else:
                writer.write(b'{"return": "thawed"}\n')
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_unix_server(agent, str(tmp_path / "vm.qga"))
        try:
            assert await guest_agent.guest_command(tmp_path / "vm.qga",
                                                   "guest-fsfreeze-status", 5) == "thawed"
        finally:
            server.close()

    asyncio.run(scenario())
