"""A group spanning two agents: every group checkpoint is crash-consistent across them.

Real processes: site ``prod`` (its agent listens for control calls), a second agent
``host2`` joined to it as from another host, and site ``dr``. Volume ``a`` lives on prod's
agent, ``b`` on host2; one group protects both to dr.

Two writer threads play ping-pong across the agents over NBD: chain 0 writes a step to
``a``, waits for the acknowledgement, then the next step to ``b``, and so on; chain 1 does
the same starting with ``b``. Each step is one 4 KiB block at a random place of the chain's
own half of the volume, carrying (chain, step) in a header. A step is issued only after the
one before was acknowledged, so in a crash-consistent image of both volumes each chain
shows a *prefix* of its steps: the newest step seen on one volume is at most one step
ahead of the newest seen on the other. Checkpoints are taken by the group's timer (every
200 ms) while the chains run; each one the recovery site offers is exported volume by
volume and checked against that rule, and byte for byte against the reference model
replayed to the steps it shows.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections.abc import Iterator
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
HALF_BYTES = VOLUME_BYTES // 2
WRITE_SECONDS = 8.0
HEADER = struct.Struct(">8sII")  # magic, chain, step
MAGIC = b"SEAWALL!"
VOLUMES = ("a", "b")


def step_volume(chain: int, step: int) -> str:
    """Chain 0 writes a, b, a, b, ...; chain 1 writes b, a, b, a, ..."""
    return VOLUMES[(step + chain) % 2]


def step_write(chain: int, step: int) -> tuple[int, bytes]:
    """Where step ``step`` of ``chain`` writes (in the chain's half) and what."""
    rng = random.Random(chain * 1_000_003 + step)
    offset = chain * HALF_BYTES + rng.randrange(HALF_BYTES // BLOCK_BYTES) * BLOCK_BYTES
    body = rng.randbytes(BLOCK_BYTES - HEADER.size)
    return offset, HEADER.pack(MAGIC, chain, step) + body


def expected_image(volume: str, last_steps: dict[int, int]) -> bytes:
    """The model of ``volume`` after each chain's steps up to ``last_steps[chain]``."""
    image = bytearray(VOLUME_BYTES)
    for chain, last in last_steps.items():
        for step in range(last + 1):
            if step_volume(chain, step) == volume:
                offset, data = step_write(chain, step)
                image[offset : offset + BLOCK_BYTES] = data
    return bytes(image)


def newest_step(image: bytes, chain: int) -> int:
    """The newest step of ``chain`` the image shows, -1 for none: it is never overwritten
    by a later step of the same prefix, so its header is intact."""
    newest = -1
    for offset in range(chain * HALF_BYTES, (chain + 1) * HALF_BYTES, BLOCK_BYTES):
        magic, owner, step = HEADER.unpack_from(image, offset)
        if magic == MAGIC and owner == chain:
            newest = max(newest, step)
    return newest


class Chain(threading.Thread):
    """Steps to a and b in turn, each acknowledged before the next is sent."""

    def __init__(self, chain: int, uris: dict[str, str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.chain = chain
        self.uris = uris
        self.stop_event = stop
        self.steps = 0
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
def three(tmp_path: Path) -> Iterator[tuple[LocalSite, Host, LocalSite]]:
    log = (tmp_path / "sites.log").open("w")
    prod = LocalSite("prod", tmp_path / "prod", log, agent_control=True)
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


def export_image(dr: LocalSite, volume: str, checkpoint: int) -> bytes:
    uri = seawall(dr, "export", "app", volume, "--checkpoint", str(checkpoint)).stdout.strip()
    try:
        with NbdClient(uri) as client:
            assert client.size == VOLUME_BYTES
            return client.read(0, VOLUME_BYTES)
    finally:
        seawall(dr, "export", "--stop", uri)


def check_checkpoint(dr: LocalSite, checkpoint: dict[str, Any]) -> dict[int, int]:
    """Export both volumes at a group checkpoint; assert the chains show prefixes and the
    images are the model's. Returns each chain's newest step."""
    images = {v: export_image(dr, v, checkpoint["id"]) for v in VOLUMES}
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
        assert images[volume] == expected_image(volume, last_steps), (
            f"checkpoint {checkpoint['id']}: volume {volume} differs from the model at "
            f"steps {last_steps}")
    return last_steps


def test_checkpoints_of_a_group_spanning_agents_are_consistent_across_them(
        three: tuple[LocalSite, Host, LocalSite]) -> None:
    prod, _host2, dr = three
    prod.pair_with(dr)
    seawall(prod, "volume", "create", "a", "--size", "4M")
    seawall(prod, "volume", "create", "b", "--size", "4M", "--agent", "host2")
    volumes = {v["name"]: v for v in run_json(prod, "volume", "list")}
    assert (volumes["a"]["agent"], volumes["b"]["agent"]) == ("prod", "host2")
    uris = {"a": volumes["a"]["nbd_uri"], "b": volumes["b"]["nbd_tcp_uri"]}

    seawall(prod, "group", "create", "app", "--volume", "a", "--volume", "b", "--to", "dr",
            "--checkpoint-interval", "200ms")
    prod.wait_protecting("app")
    shown = run_json(prod, "group", "show", "app")
    assert [(v["name"], v["agent"]) for v in shown["volumes"]] == [("a", "prod"),
                                                                   ("b", "host2")]

    stop = threading.Event()
    chains = [Chain(chain, uris, stop) for chain in (0, 1)]
    for chain in chains:
        chain.start()
    time.sleep(WRITE_SECONDS)
    stop.set()
    for chain in chains:
        chain.join(30)
        assert chain.error is None, f"chain {chain.chain}: {chain.error!r}"
    final = int(seawall(prod, "checkpoint", "tag", "app", "--name", "final").stdout)
    dr.wait_checkpoint("app", final)

    offered = run_json(dr, "checkpoint", "list", "app")
    assert final in {c["id"] for c in offered}
    members = prod.group_status("app")["members"]
    assert [(m["agent"], m["volumes"]) for m in members] == [("prod", ["a"]), ("host2", ["b"])]
    streams = {m["group_id"] for m in members}
    assert all(set(c["members"]) == streams for c in offered)  # each with a marker per member
    at_prod = {c["id"] for c in run_json(prod, "checkpoint", "list", "app")}
    assert {c["id"] for c in offered} <= at_prod  # the protected site lists the same ids

    # Every checkpoint taken while the chains ran (up to 12, spread) and the final one.
    during = [c for c in offered if c["id"] != final]
    picked = [*during[:: max(1, len(during) // 12)],
              next(c for c in offered if c["id"] == final)]
    seen = [check_checkpoint(dr, checkpoint) for checkpoint in picked]
    steps = [chain.steps for chain in chains]
    assert seen[-1] == {0: steps[0] - 1, 1: steps[1] - 1}  # the final one: every step
    in_flight = [s for s in seen[:-1] if 0 < s[0] < steps[0] - 1 and 0 < s[1] < steps[1] - 1]
    assert len(in_flight) >= 3, f"too few checkpoints were taken mid-write: {seen}"

    # What a spanning group cannot do yet says so, and changes nothing.
    test = refused(dr, "failover", "test", "app")
    assert test.returncode == 4 and "spans agents" in " ".join(test.stderr.split())
    status = dr.group_status("app")  # the recovery side: every member's journal connected
    assert status["connected"] is True and status["rpo_s"] is not None
    assert [m["volumes"] for m in status["members"]] == [["a"], ["b"]]
    assert prod.group_status("app")["state"] == "protecting"
    document = run_json(prod, "group", "status", "app")  # the monitor's, with alerts
    assert [m["agent"] for m in document["agent"]["members"]] == ["prod", "host2"]
    assert document["agent"]["rpo_s"] is not None
