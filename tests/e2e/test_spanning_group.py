"""A group spanning two agents: every group checkpoint is crash-consistent across them.

Real processes: site ``prod``, a second agent ``host2`` joined to it as from another host,
and site ``dr``. Volume ``a`` lives on prod's agent (the group's lead), ``b`` on host2;
one group protects both to dr.

Two writer threads play ping-pong across the agents over NBD: chain 0 writes a step to
``a``, waits for the acknowledgement, then the next step to ``b``, and so on; chain 1 does
the same starting with ``b``. Each step is one 4 KiB block at a random place of the
chain's own quarter of the volume, carrying (chain, step) in a header. A step is issued
only after the one before was acknowledged, so in a crash-consistent image of both volumes
each chain shows a *prefix* of its steps: the newest step seen on one volume is at most
one step ahead of the newest seen on the other. Checkpoints are taken by the group's timer
(every 200 ms) while the chains run; the ones the recovery site offers (up to 16, spread,
and the last) are exported volume by volume and checked against that rule, and byte for
byte against the reference model replayed to the steps they show. The second test stops
the member agent in between: its outage must not hold the other agent's writes, and the
group goes on once it is back. The third kills (SIGKILL) the member agent, then the lead
agent, in the middle of the chains. The last restores a file from the member's volume.
The first also runs a failover test and a live failover (rolled back) of the group at a
tagged checkpoint, reading each volume's image back against the model while the chains go
on, and ends with a move of the group to dr.
"""

from __future__ import annotations

import itertools
import random
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import refused, run_json, seawall
from support.hosts import Host
from support.sites import stop_for_sure

pytestmark = pytest.mark.e2e

VOLUME_BYTES = 4 << 20
BLOCK_BYTES = 4096
CHAIN_BYTES = VOLUME_BYTES // 4  # chain c writes [c * CHAIN_BYTES, +CHAIN_BYTES)
OUTAGE_OFFSET = 2 * CHAIN_BYTES  # where a's writes go while host2 is away
OUTAGE_WRITES = 256
WRITE_SECONDS = 6.0
HEADER = struct.Struct(">8sII")  # magic, chain, step
MAGIC = b"SEAWALL!"
VOLUMES = ("a", "b")


def step_volume(chain: int, step: int) -> str:
    """Chain 0 writes a, b, a, b, ...; chain 1 writes b, a, b, a, ..."""
    return VOLUMES[(step + chain) % 2]


def step_write(chain: int, step: int) -> tuple[int, bytes]:
    """Where step ``step`` of ``chain`` writes (in the chain's quarter) and what."""
    rng = random.Random(chain * 1_000_003 + step)
    offset = chain * CHAIN_BYTES + rng.randrange(CHAIN_BYTES // BLOCK_BYTES) * BLOCK_BYTES
    body = rng.randbytes(BLOCK_BYTES - HEADER.size)
    return offset, HEADER.pack(MAGIC, chain, step) + body


def outage_write(index: int) -> tuple[int, bytes]:
    return OUTAGE_OFFSET + index * BLOCK_BYTES, random.Random(-1 - index).randbytes(BLOCK_BYTES)


def expected_image(volume: str, last_steps: dict[int, int], outage: bool) -> bytes:
    """The model of ``volume`` after each chain's steps up to ``last_steps[chain]`` (and
    the writes made while host2 was away, if ``outage``)."""
    image = bytearray(VOLUME_BYTES)
    for chain, last in last_steps.items():
        for step in range(last + 1):
            if step_volume(chain, step) == volume:
                offset, data = step_write(chain, step)
                image[offset : offset + BLOCK_BYTES] = data
    if outage and volume == "a":
        for index in range(OUTAGE_WRITES):
            offset, data = outage_write(index)
            image[offset : offset + BLOCK_BYTES] = data
    return bytes(image)


def newest_step(image: bytes, chain: int) -> int:
    """The newest step of ``chain`` the image shows, -1 for none: it is never overwritten
    by a later step of the same prefix, so its header is intact."""
    newest = -1
    for offset in range(chain * CHAIN_BYTES, (chain + 1) * CHAIN_BYTES, BLOCK_BYTES):
        magic, owner, step = HEADER.unpack_from(image, offset)
        if magic == MAGIC and owner == chain:
            newest = max(newest, step)
    return newest


class Chain(threading.Thread):
    """Steps to a and b in turn, each acknowledged before the next is sent."""

    def __init__(self, chain: int, uris: dict[str, str], stop: threading.Event,
                 first_step: int = 0) -> None:
        super().__init__(daemon=True)
        self.chain = chain
        self.uris = uris
        self.stop_event = stop
        self.steps = first_step  # steps sent and acknowledged
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            clients = {name: NbdClient(uri).connect() for name, uri in self.uris.items()}
            try:
                while not self.stop_event.is_set():
                    offset, data = step_write(self.chain, self.steps)
                    clients[step_volume(self.chain, self.steps)].write(offset, data)
                    self.steps += 1
            finally:
                for client in clients.values():
                    client.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.fixture
def three(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          ) -> Iterator[tuple[LocalSite, Host, LocalSite]]:
    monkeypatch.setenv("SEAWALL_MONITOR_INTERVAL_S", "0.5")  # alerts within a second
    log = (tmp_path / "sites.log").open("w")
    prod = LocalSite("prod", tmp_path / "prod", log)
    dr = LocalSite("dr", tmp_path / "dr", log)
    host2 = Host("host2", tmp_path / "host2", log)
    try:
        prod.launch()
        dr.launch()
        prod.wait_started()
        dr.wait_started()
        host2.join(prod)
        yield prod, host2, dr
    finally:
        host2.stop()
        for site in (prod, dr):
            stop_for_sure(site)
        log.close()


def export_image(dr: LocalSite, volume: str, checkpoint: int, cli: bool = False) -> bytes:
    """``volume`` at group checkpoint ``checkpoint``, read whole over NBD from an export
    (made through the CLI if ``cli``, else through the API: it is quicker)."""
    if cli:
        uri = seawall(dr, "export", "app", volume, "--checkpoint",
                      str(checkpoint)).stdout.strip()
    else:
        made = dr.api.post("/api/v1/exports", {"group": "app", "volume": volume,
                                               "checkpoint": str(checkpoint)})
        assert made["checkpoint_id"] == checkpoint  # the group's id, not the member marker's
        uri = made["uri"]
    try:
        with NbdClient(uri) as client:
            assert client.size == VOLUME_BYTES
            return client.read(0, VOLUME_BYTES)
    finally:
        dr.api.post("/api/v1/exports/stop", {"uri": uri})


def check_checkpoint(dr: LocalSite, checkpoint: dict[str, Any], outage: bool = False,
                     cli: bool = False) -> dict[int, int]:
    """Export both volumes at a group checkpoint; assert the chains show prefixes and the
    images are the model's. Returns each chain's newest step."""
    images = {v: export_image(dr, v, checkpoint["id"], cli) for v in VOLUMES}
    last_steps: dict[int, int] = {}
    for chain in (0, 1):
        newest = {v: newest_step(images[v], chain) for v in VOLUMES}
        last = max(newest.values())
        # Every step before the newest one seen was acknowledged before it was sent: it
        # must be in, so the other volume shows the step just before (-1: none yet).
        before = newest[step_volume(chain, last + 1)]
        assert last == -1 or before == last - 1, (
            f"checkpoint {checkpoint['id']}: chain {chain} shows step {last} "
            f"but only step {before} on the other volume ({newest})")
        last_steps[chain] = last
    for volume in VOLUMES:
        assert images[volume] == expected_image(volume, last_steps, outage), (
            f"checkpoint {checkpoint['id']}: volume {volume} differs from the model at "
            f"steps {last_steps}")
    return last_steps


def protect_across_agents(prod: LocalSite, dr: LocalSite, host2: Host) -> dict[str, str]:
    """Volume a on prod's agent, b on host2's, one group protecting both to dr; the
    volumes' NBD URIs (b's over TCP, with TLS and a client certificate of host2's CA)."""
    prod.pair_with(dr)
    seawall(prod, "volume", "create", "a", "--size", "4M")
    seawall(prod, "volume", "create", "b", "--size", "4M", "--agent", "host2")
    volumes = {v["name"]: v for v in run_json(prod, "volume", "list")}
    assert (volumes["a"]["agent"], volumes["b"]["agent"]) == ("prod", "host2")
    seawall(prod, "group", "create", "app", "--volume", "a", "--volume", "b", "--to", "dr",
            "--checkpoint-interval", "200ms")
    prod.wait_protecting("app")
    credentials = host2.client_certificates(host2.directory.parent / "nbd-client")
    return {"a": volumes["a"]["nbd_uri"],
            "b": f"{volumes['b']['nbd_tcp_uri']}?tls-certificates={credentials}"}


def run_chains(uris: dict[str, str], seconds: float, first_steps: list[int],
               crash: Callable[[], None] | None = None) -> list[int]:
    """Both chains for ``seconds``, from their ``first_steps``; the steps they reached
    (acknowledged). With ``crash`` (an agent killed), it is called after ``seconds`` while
    they write: each chain then ends on its first failed step (each writes to both
    agents), which a later run sends again (the same block and bytes: it may or may not
    have reached the volume)."""
    stop = threading.Event()
    chains = [Chain(chain, uris, stop, first) for chain, first in enumerate(first_steps)]
    for chain in chains:
        chain.start()
    time.sleep(seconds)
    if crash is not None:
        crash()  # and each chain runs on until a step of it fails
    else:
        stop.set()
    for chain in chains:
        chain.join(30)
        assert not chain.is_alive(), f"chain {chain.chain} is stuck"
        assert (chain.error is not None) == (crash is not None), (
            f"chain {chain.chain}: {chain.error!r}")
    stop.set()
    return [chain.steps for chain in chains]


def tag(prod: LocalSite, dr: LocalSite, name: str) -> int:
    """A tagged group checkpoint, once the recovery site offers it."""
    checkpoint = int(seawall(prod, "checkpoint", "tag", "app", "--name", name).stdout)
    dr.wait_checkpoint("app", checkpoint)
    return checkpoint


def alert_ids(site: LocalSite) -> set[str]:
    return {alert["id"] for alert in site.api.get("/api/v1/alerts")}


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not in {timeout_s:.0f} s"
        time.sleep(0.1)


def spread(checkpoints: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Up to ``count`` of them, evenly spread."""
    total = len(checkpoints)
    return [checkpoints[i * total // count] for i in range(min(count, total))]


def test_checkpoints_of_a_group_spanning_agents_are_consistent_across_them(
        three: tuple[LocalSite, Host, LocalSite]) -> None:
    prod, host2, dr = three
    clone_dir = dr.config.clone_dir / "clone"
    uris = protect_across_agents(prod, dr, host2)
    shown = run_json(prod, "group", "show", "app")
    assert [(v["name"], v["agent"]) for v in shown["volumes"]] == [("a", "prod"),
                                                                   ("b", "host2")]

    steps = run_chains(uris, WRITE_SECONDS, [0, 0])
    final = tag(prod, dr, "final")

    offered = run_json(dr, "checkpoint", "list", "app")
    assert final in {c["id"] for c in offered}
    members = prod.group_status("app")["members"]
    assert [(m["agent"], m["volumes"]) for m in members] == [("prod", ["a"]), ("host2", ["b"])]
    streams = {m["group_id"] for m in members}
    assert all(set(c["members"]) == streams for c in offered)  # each with a marker per member
    at_prod = {c["id"] for c in run_json(prod, "checkpoint", "list", "app")}
    assert {c["id"] for c in offered} <= at_prod  # the protected site lists the same ids

    # Checkpoints taken while the chains ran (up to 16, spread) and the final one.
    during = spread([c for c in offered if c["id"] != final], 16)
    seen = [check_checkpoint(dr, checkpoint) for checkpoint in during]
    assert check_checkpoint(dr, next(c for c in offered if c["id"] == final), cli=True) == {
        0: steps[0] - 1, 1: steps[1] - 1}  # the final one: every step
    in_flight = [s for s in seen if 0 < s[0] < steps[0] - 1 and 0 < s[1] < steps[1] - 1]
    assert len(in_flight) >= 3, f"too few checkpoints were taken mid-write: {seen}"

    # A clone of the whole group at a checkpoint: each volume from its member's journal.
    middle = len(during) // 2  # a checkpoint taken mid-write, checked above
    cloned = run_json(dr, "clone", "app", "--checkpoint", str(during[middle]["id"]),
                      "--to", "clone")
    assert cloned["state"] == "done" and cloned["checkpoint"]["id"] == during[middle]["id"]
    for volume in VOLUMES:
        assert (clone_dir / f"{volume}.raw").read_bytes() == expected_image(
            volume, seen[middle], outage=False), f"clone of {volume} differs"
    assert dr.api.get("/api/v1/exports") == []  # the clone's temporary exports are gone

    status = dr.group_status("app")  # the recovery side: every member's journal connected
    assert status["connected"] is True and status["rpo_s"] is not None
    assert [m["volumes"] for m in status["members"]] == [["a"], ["b"]]
    assert prod.group_status("app")["state"] == "protecting"
    document = run_json(prod, "group", "status", "app")  # the monitor's, with alerts
    assert [m["agent"] for m in document["agent"]["members"]] == ["prod", "host2"]
    assert document["agent"]["rpo_s"] is not None

    # Settings reach the lead's rounds (and both sites); a resync runs at every member.
    seawall(prod, "group", "update", "app", "--checkpoint-interval", "1s")
    assert {run_json(site, "group", "show", "app")["checkpoint_interval_s"]
            for site in (prod, dr)} == {1.0}
    rounds_before = lead_rounds(prod)
    time.sleep(3.0)
    assert 1 <= lead_rounds(prod) - rounds_before <= 4  # was every 200 ms: ~15
    resynced = run_json(prod, "group", "resync", "app")  # one status, as for any group
    assert [m["agent"] for m in resynced["members"]] == ["prod", "host2"]
    assert "delta-sync started" in seawall(prod, "group", "resync", "app").stderr
    prod.wait_protecting("app")
    after_resync = tag(prod, dr, "after-resync")
    assert check_checkpoint(dr, {"id": after_resync}) == {0: steps[0] - 1, 1: steps[1] - 1}

    # A failover test at that tagged checkpoint while the chains write on: each volume's
    # writable image from its member's journal at that member's marker, as the model.
    tagged_steps = {0: steps[0] - 1, 1: steps[1] - 1}
    later = run_chains(uris, 1.0, steps)
    tag(prod, dr, "later")  # each member journal has records past the tested markers
    test = run_json(dr, "failover", "test", "app", "--checkpoint", str(after_resync))
    assert test["state"] == "running" and test["checkpoint"]["id"] == after_resync
    images = {image["volume"]: image["uri"] for image in test["images"]}
    assert sorted(images) == list(VOLUMES)
    for volume, uri in images.items():
        with NbdClient(uri) as client:
            assert client.read(0, VOLUME_BYTES) == expected_image(
                volume, tagged_steps, outage=False), f"test image of {volume} differs"
            client.write(0, b"scratch!" * 512)  # the test's own write, never replicated
    assert later[0] > steps[0] and later[1] > steps[1]
    stopped = run_json(dr, "failover", "stop", "app", "--result", "pass")
    assert stopped["state"] == "stopped" and stopped["result"] == "pass"
    assert not list((dr.directory / "agent" / "scratch").glob("*/*"))

    # A live failover at that checkpoint reads the same, and rolled back, every member's
    # replication resumes where it stopped.
    live = run_json(dr, "failover", "live", "app", "--checkpoint", str(after_resync))
    assert live["state"] == "running"
    for image in live["images"]:
        with NbdClient(image["uri"]) as client:
            assert client.read(0, VOLUME_BYTES) == expected_image(
                image["volume"], tagged_steps, outage=False), f"live {image['volume']} differs"
    assert sorted(i["volume"] for i in live["images"]) == list(VOLUMES)
    assert run_json(dr, "failover", "rollback", "app")["state"] == "rolled-back"
    prod.wait_protecting("app")
    assert check_checkpoint(dr, {"id": tag(prod, dr, "after-live")}) == {
        0: later[0] - 1, 1: later[1] - 1}

    # A move: every member stops taking writes, the lead takes the final checkpoint, and
    # the volumes run at dr with every acknowledged write. Reverse protection: not yet.
    reverse = refused(dr, "move", "app", "--reverse-protect")
    assert reverse.returncode == 4 and "spans agents" in " ".join(reverse.stderr.split())
    last = run_chains(uris, 1.0, later)  # written after the last checkpoint: moved too
    moved = run_json(dr, "move", "app")
    assert moved["kind"] == "move" and moved["state"] == "committed"
    served = {v["name"]: v["nbd_uri"] for v in run_json(dr, "volume", "list")}
    for volume in VOLUMES:
        with NbdClient(served[volume]) as client:
            assert client.read(0, VOLUME_BYTES) == expected_image(
                volume, {0: last[0] - 1, 1: last[1] - 1}, outage=False), f"moved {volume}"
    back = refused(dr, "group", "reverse", "app")  # refused at prod, before any change
    assert "spans agents" in " ".join(back.stderr.split())
    assert run_json(dr, "group", "show", "app")["role"] == "failed-over"
    assert [m["state"] for m in prod.group_status("app")["members"]] == ["failed-over"] * 2


def lead_rounds(prod: LocalSite) -> int:
    rounds: int = prod.group_status("app")["coordination"]["rounds"]
    return rounds


def test_a_member_agent_away_holds_no_other_agents_writes_and_the_group_goes_on(
        three: tuple[LocalSite, Host, LocalSite]) -> None:
    prod, host2, dr = three
    uris = protect_across_agents(prod, dr, host2)
    steps = run_chains(uris, 3.0, [0, 0])
    before = tag(prod, dr, "before")

    host2.stop()  # a clean stop: it ends its part of any round first
    outage_start_ns = time.time_ns()
    latencies_s = []
    with NbdClient(uris["a"]) as client:
        for index in range(OUTAGE_WRITES):  # ~ a dozen rounds fail meanwhile
            offset, data = outage_write(index)
            started_s = time.monotonic()
            client.write(offset, data)
            latencies_s.append(time.monotonic() - started_s)
            time.sleep(0.01)
    outage_end_ns = time.time_ns()
    assert max(latencies_s) < 1.0, f"a's writes waited for the missing member: {latencies_s}"
    document = run_json(prod, "group", "status", "app")["agent"]
    assert document["state"] == "error" and "host2" in document["last_error"]
    coordination = document["coordination"]
    assert coordination["failed_rounds"] >= 3 and coordination["unreachable"] == ["host2"]
    tagged = refused(prod, "checkpoint", "tag", "app", "--name", "away")
    assert "host2" in " ".join(tagged.stderr.split())
    wait_until(lambda: "agent-unreachable:host2" in alert_ids(prod), "the alert for host2")

    host2.run()
    host2.wait_reachable(prod)
    prod.wait_protecting("app")
    wait_until(lambda: "agent-unreachable:host2" not in alert_ids(prod), "the alert cleared")
    steps = run_chains(uris, 3.0, steps)
    after = tag(prod, dr, "after")

    offered = run_json(dr, "checkpoint", "list", "app")
    assert not [c for c in offered if outage_start_ns <= c["time_ns"] <= outage_end_ns]
    earlier = [c for c in offered if c["time_ns"] < outage_start_ns]
    later = [c for c in offered if c["time_ns"] > outage_end_ns]
    assert before in {c["id"] for c in earlier}
    final = next(c for c in later if c["id"] == after)
    for checkpoint in spread(earlier, 4):
        check_checkpoint(dr, checkpoint)
    for checkpoint in spread(later, 8):
        check_checkpoint(dr, checkpoint, outage=True)
    assert check_checkpoint(dr, final, outage=True) == {0: steps[0] - 1, 1: steps[1] - 1}


def test_member_and_lead_agents_killed_mid_write_leave_every_checkpoint_consistent(
        three: tuple[LocalSite, Host, LocalSite], kill_agent: Callable[[LocalSite], int],
        ) -> None:
    prod, host2, dr = three
    uris = protect_across_agents(prod, dr, host2)
    killed_ns: list[int] = []

    def kill_host2() -> None:
        assert host2.process is not None
        killed_ns.append(time.time_ns())
        host2.process.kill()
        host2.process.wait()

    def kill_lead() -> None:
        killed_ns.append(time.time_ns())
        kill_agent(prod)

    steps = run_chains(uris, 2.0, [0, 0], crash=kill_host2)
    host2.run()
    host2.wait_reachable(prod)
    prod.wait_protecting("app")  # host2 compared its volume: nothing survived the kill

    steps = run_chains(uris, 2.0, steps, crash=kill_lead)
    prod.stop()  # its manager; then the site again, with a new agent
    prod.start()
    prod.wait_protecting("app")

    steps = run_chains(uris, 2.0, steps)
    final = tag(prod, dr, "final")
    offered = run_json(dr, "checkpoint", "list", "app")
    edges = [0, *killed_ns, time.time_ns()]
    for start, end in itertools.pairwise(edges):  # before, between, after the kills
        window = [c for c in offered if start <= c["time_ns"] < end and c["id"] != final]
        assert window, f"no checkpoint offered between {start} and {end}"
        for checkpoint in spread(window, 6):
            check_checkpoint(dr, checkpoint)
    assert check_checkpoint(dr, next(c for c in offered if c["id"] == final)) == {
        0: steps[0] - 1, 1: steps[1] - 1}


def test_files_restore_from_a_volume_on_a_member_agent(
        three: tuple[LocalSite, Host, LocalSite], tmp_path: Path) -> None:
    prod, host2, dr = three
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello.txt").write_text("hello from host2\n")
    image = tmp_path / "fs.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image), "4M"],
                   check=True, capture_output=True)
    prod.pair_with(dr)
    seawall(prod, "volume", "create", "a", "--size", "4M")
    seawall(prod, "volume", "create", "b", "--size", "4M", "--agent", "host2")
    b_uri = {v["name"]: v for v in run_json(prod, "volume", "list")}["b"]["nbd_tcp_uri"]
    credentials = host2.client_certificates(host2.directory.parent / "nbd-client")
    with NbdClient(f"{b_uri}?tls-certificates={credentials}") as client:
        client.write(0, image.read_bytes())
        client.flush()
    seawall(prod, "group", "create", "app", "--volume", "a", "--volume", "b", "--to", "dr",
            "--checkpoint-interval", "500ms")
    prod.wait_protecting("app")
    checkpoint = tag(prod, dr, "with-files")
    listed = run_json(dr, "files", "ls", "app", "b", "/", "--checkpoint", str(checkpoint))
    assert "hello.txt" in {entry["name"] for entry in listed["entries"]}
    seawall(dr, "files", "get", "app", "b", "/hello.txt", "--checkpoint", str(checkpoint),
            "--to", str(tmp_path / "out"))
    assert (tmp_path / "out" / "hello.txt").read_text() == "hello from host2\n"
