"""Real faults under write load: kill -9 of a manager and of agents, and a faulty link.

A writer thread keeps writing random data through NBD into the protected volume and
mirrors every acknowledged write into a reference model (``support.workload.Writer``).
Checkpoints are tagged between two writes (the writer's lock held), and the model's sha256
at that moment is what the checkpoint must hold. A write whose outcome a crash made unknown
is written again, whole, once the agent is back, before anything else is written or
tagged, so the model stays equal to the volume.

After each fault and the recovery from it, every checkpoint the recovery site lists and
whose content we know is exported there and read back: it must be byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seawall.atomic import atomic_write_json
from seawall.config import CONFIG_NAME
from seawall.localsites import LocalSite, free_port
from support.checkpoints import disagreements, listed, verify, wait_all
from support.cli import seawall
from support.faultproxy import FaultProxy, wait_until
from support.sitelog import SYNC
from support.workload import CHECKPOINT_INTERVAL_S, GROUP, VOLUME_BYTES, Writer, protect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

AgentPid = Callable[[LocalSite], "int | None"]
KillAgent = Callable[[LocalSite], int]


def syncs(log_path: Path) -> int:
    return len(SYNC.findall(log_path.read_text()))


# --- a. the protected site's manager crashes ------------------------------------------


def test_manager_crash_keeps_data_path_and_checkpoints(
    sites: tuple[LocalSite, LocalSite], agent_pid: AgentPid, tmp_path: Path,
) -> None:
    prod, dr = sites
    writer = protect(prod, dr, seed=11)
    expected: dict[int, str] = {}
    with writer.running():
        time.sleep(0.3)
        for index in range(2):
            checkpoint, sha256 = writer.checkpoint(prod, f"before-crash-{index}")
            expected[checkpoint] = sha256
            time.sleep(0.2)
        pid = agent_pid(prod)
        assert prod.process is not None
        prod.process.kill()
        prod.process.wait()
        writes_at_crash = writer.writes
        time.sleep(0.5)
        # The agent alone: it serves NBD, replicates, and makes periodic checkpoints.
        quiet = writer.quiet(4 * CHECKPOINT_INTERVAL_S)
        time.sleep(0.5)
        assert writer.writes > writes_at_crash + 20, "writes stalled without the manager"
        assert agent_pid(prod) == pid
        prod.start()  # a new manager on the same directory adopts the running agent
        assert agent_pid(prod) == pid, "the restarted manager replaced the agent"
        for index in range(2):
            checkpoint, sha256 = writer.checkpoint(prod, f"after-restart-{index}")
            expected[checkpoint] = sha256
            time.sleep(0.2)
    assert writer.failures == 0, "NBD writes failed while only the manager was down"

    wait_all(dr, list(expected))
    at_dr = listed(dr)
    in_quiet = [c for c, info in at_dr.items() if quiet.holds(info)]
    assert len(in_quiet) >= 2, "no periodic checkpoint while the manager was down"
    expected.update(dict.fromkeys(in_quiet, quiet.sha256))
    verify(dr, expected)

    status = prod.group_status(GROUP)
    assert status["state"] == "protecting" and status["link_up"]
    at_prod = {c["id"]: c for c in json.loads(
        seawall(prod, "checkpoint", "list", GROUP, "--json").stdout)}
    for checkpoint in expected:
        assert at_prod[checkpoint]["replicated"] and not at_prod[checkpoint]["lost"]
    assert syncs(tmp_path / "sites.log") == 1, "a manager crash must not cause a resync"
    assert not disagreements(prod, dr)


# --- b. the recovery site's agent is killed -------------------------------------------


def test_recovery_agent_kill_resumes_without_loss(
    sites: tuple[LocalSite, LocalSite], kill_agent: KillAgent, tmp_path: Path,
) -> None:
    prod, dr = sites
    writer = protect(prod, dr, seed=22)
    expected: dict[int, str] = {}
    with writer.running():
        time.sleep(0.3)
        for index in range(2):
            checkpoint, sha256 = writer.checkpoint(prod, f"before-kill-{index}")
            expected[checkpoint] = sha256
        dr.wait_checkpoint(GROUP, min(expected))
        time.sleep(0.3)  # frames in flight and being journaled
        kill_agent(dr)
        time.sleep(0.3)
        checkpoint, sha256 = writer.checkpoint(prod, "while-dr-down")
        expected[checkpoint] = sha256
        assert listed(prod)[checkpoint]["replicated"] is False
        writes_before_restart = writer.writes
        # dr's manager still runs and does not restart an agent by itself: restart the site.
        dr.stop()
        dr.start()
        for index in range(2):
            checkpoint, sha256 = writer.checkpoint(prod, f"after-restart-{index}")
            expected[checkpoint] = sha256
            time.sleep(0.2)
        assert writer.writes > writes_before_restart
    assert writer.failures == 0, "writes at the protected site failed when dr's agent died"

    wait_all(dr, list(expected))
    tagged_at_dr = {c for c, info in listed(dr).items() if info["name"]}
    assert tagged_at_dr == set(expected), "a tagged checkpoint went missing"
    verify(dr, expected)
    assert not any(c["lost"] for c in listed(prod).values())
    assert syncs(tmp_path / "sites.log") == 1, "resume from the durable seq, no resync"
    assert not disagreements(prod, dr)


# --- c. the protected site's agent is killed ------------------------------------------


def test_protected_agent_kill_resyncs_and_keeps_old_checkpoints(
    sites: tuple[LocalSite, LocalSite], kill_agent: KillAgent, tmp_path: Path,
) -> None:
    prod, dr = sites
    writer = protect(prod, dr, seed=33)
    before: dict[int, str] = {}
    after: dict[int, str] = {}
    with writer.running():
        time.sleep(0.3)
        for index in range(2):
            checkpoint, sha256 = writer.checkpoint(prod, f"before-kill-{index}")
            before[checkpoint] = sha256
        dr.wait_checkpoint(GROUP, max(before))
        checkpoint, sha256 = writer.checkpoint(prod, "just-before-kill")  # maybe not shipped
        before[checkpoint] = sha256
        kill_agent(prod)
        time.sleep(0.5)
        assert writer.failures > 0, "the writer did not notice the agent's death"
        prod.stop()
        prod.start()  # a new agent: its stream cannot resume, so the group resyncs
        states: list[str] = []
        deadline = time.monotonic() + 30
        while not states or states[-1] != "protecting":
            assert time.monotonic() < deadline, f"no protection after restart: {states}"
            state = prod.group_status(GROUP)["state"]
            if not states or states[-1] != state:
                states.append(state)
            time.sleep(0.01)
        assert set(states) <= {"delta-sync", "protecting"}, states  # no bitmap survives
        for index in range(2):
            checkpoint, sha256 = writer.checkpoint(prod, f"after-resync-{index}")
            after[checkpoint] = sha256
            time.sleep(0.2)
    status = prod.group_status(GROUP)
    assert status["sync"]["total_bytes"] == status["sync"]["done_bytes"] == VOLUME_BYTES
    assert status["sync"]["shipped_bytes"] < VOLUME_BYTES  # only blocks that differ
    log_text = (tmp_path / "sites.log").read_text()
    assert syncs(tmp_path / "sites.log") == 2 and f"group {GROUP}: delta-sync from" in log_text

    wait_all(dr, list(after))
    at_dr = listed(dr)
    survivors = {c: sha for c, sha in before.items() if c in at_dr}
    assert set(list(before)[:2]) <= set(survivors), "replicated checkpoints were lost"
    verify(dr, survivors | after)
    assert not disagreements(prod, dr)


# --- d. a faulty link between the sites -------------------------------------------------


def move_replication_listener(site: LocalSite) -> tuple[int, int]:
    """Let the site's agent listen on a new port; returns (advertised port, new port).

    The protected site dials the replication address it learned at pairing. To put a
    proxy in that path without a product hook, the stopped site is re-configured to listen
    elsewhere, and the proxy takes the advertised port (as a port forward in a NAT would).
    """
    path = site.config.data_dir / CONFIG_NAME
    config = json.loads(path.read_text())
    advertised, moved = int(config["replication_port"]), free_port()
    config["replication_port"] = moved
    atomic_write_json(path, config)
    return advertised, moved


@contextlib.contextmanager
def proxied_protection(
    prod: LocalSite, dr: LocalSite, seed: int,
) -> Iterator[tuple[FaultProxy, Writer]]:
    """Protection whose replication link runs through a ``FaultProxy``."""
    prod.pair_with(dr)
    dr.stop()
    advertised, moved = move_replication_listener(dr)
    dr.start()
    with FaultProxy("127.0.0.1", moved, listen_port=advertised) as proxy:
        writer = protect(prod, dr, seed=seed, pair=False)
        assert proxy.connections_accepted >= 1, "replication does not go through the proxy"
        yield proxy, writer


def check_link_outcome(prod: LocalSite, dr: LocalSite, writer: Writer,
                       expected: dict[int, str], log_path: Path) -> None:
    assert writer.failures == 0, "link faults must never fail a protected write"
    wait_all(dr, list(expected))
    tagged_at_dr = {c for c, info in listed(dr).items() if info["name"]}
    assert tagged_at_dr == set(expected), "a tagged checkpoint went missing"
    verify(dr, expected)
    assert not any(c["lost"] for c in listed(prod).values())
    assert syncs(log_path) == 1, "link faults must resume, not resync"
    assert not disagreements(prod, dr)


def test_slow_and_stalled_link_loses_nothing(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    """Latency, a bandwidth cap and a stall (blackhole): the session survives all three."""
    prod, dr = sites
    expected: dict[int, str] = {}
    with proxied_protection(prod, dr, seed=44) as (proxy, writer):
        with writer.running():
            time.sleep(0.3)
            expected.update([writer.checkpoint(prod, "clean")])
            proxy.latency_s = 0.03
            proxy.bandwidth_bytes_per_s = 2 << 20
            time.sleep(1.5)
            expected.update([writer.checkpoint(prod, "slow")])
            proxy.latency_s = 0.0
            proxy.bandwidth_bytes_per_s = None
            time.sleep(0.3)
            proxy.blackhole = True
            time.sleep(1.0)
            stalled = writer.checkpoint(prod, "stalled")
            expected.update([stalled])
            assert not listed(prod)[stalled[0]]["replicated"]
            proxy.blackhole = False
            time.sleep(0.3)
            expected.update([writer.checkpoint(prod, "end")])
        wait_all(dr, list(expected))
        accepted = proxy.connections_accepted
    assert accepted == 1, "a slow or stalled link must not need a new session"
    check_link_outcome(prod, dr, writer, expected, tmp_path / "sites.log")




def test_link_resets_refusals_and_corruption_lose_nothing(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    """Cut connections, refused reconnects and corrupted frames: resume, never resync."""
    prod, dr = sites
    expected: dict[int, str] = {}
    with proxied_protection(prod, dr, seed=55) as (proxy, writer):
        with writer.running():
            time.sleep(0.3)
            expected.update([writer.checkpoint(prod, "clean")])
            for index in range(4):
                proxy.cut()
                time.sleep(0.4)
                expected.update([writer.checkpoint(prod, f"after-cut-{index}")])
            proxy.drop_new_connections = True
            proxy.cut()
            time.sleep(1.0)
            refused = writer.checkpoint(prod, "while-refused")
            expected.update([refused])
            assert not listed(prod)[refused[0]]["replicated"]
            proxy.drop_new_connections = False
            for index in range(2):
                # Into a running session, so that the byte lands in a TLS record carrying
                # frames: the receiver finds its MAC wrong and drops the session.
                assert wait_until(lambda: prod.group_status(GROUP)["link_up"], timeout_s=20,
                                  interval_s=0.05), "no session after the last fault"
                sessions = proxy.connections_accepted
                proxy.corrupt_next(100)
                assert wait_until(lambda before=sessions: proxy.connections_accepted > before,
                                  timeout_s=20), "a corrupted record did not end its session"
                expected.update([writer.checkpoint(prod, f"after-corruption-{index}")])
        wait_all(dr, list(expected))
    check_link_outcome(prod, dr, writer, expected, tmp_path / "sites.log")
    # At least one of the two flipped bytes is refused by the receiver's TLS layer as a bad
    # record. Not necessarily both (one CI run counted one): a byte can also land where
    # the failure is logged otherwise, e.g. in the next connection's TLS handshake when the
    # session ends before it is reached. Nothing is lost either way (checked above).
    # The refusal is logged as the session's end, or as the cause of the connection lost
    # that a write into the dead session met first.
    rejected = sum(
        1 for line in (tmp_path / "sites.log").read_text().splitlines()
        if "replication session from" in line and "[SSL: " in line
    )
    assert rejected >= 1, "the receiver's TLS layer did not reject the corrupted records"


# --- e. checkpoint ids across a restart of the protected agent --------------------------


def test_protected_agent_restart_never_reuses_checkpoint_ids(
    sites: tuple[LocalSite, LocalSite], kill_agent: KillAgent,
) -> None:
    """Ids handed out but lost in a crash stay lost; new checkpoints get new ids."""
    prod, dr = sites
    writer = protect(prod, dr, seed=66)
    replicated, _ = writer.checkpoint(prod, "replicated")
    dr.wait_checkpoint(GROUP, replicated)
    dr.stop()
    doomed = [writer.checkpoint(prod, f"doomed-{index}")[0] for index in range(5)]
    kill_agent(prod)
    prod.stop()
    prod.start()
    dr.start()
    prod.wait_protecting(GROUP, timeout_s=30)
    later: dict[int, str] = {}
    for index in range(3):
        checkpoint, sha256 = writer.checkpoint(prod, f"later-{index}")
        later[checkpoint] = sha256
    assert min(later) > max(doomed), "a checkpoint id was handed out twice"
    wait_all(dr, list(later))
    verify(dr, later)
    for restart in ("after the crash", "after a clean restart"):
        at_prod = listed(prod)
        for checkpoint in doomed:
            assert at_prod[checkpoint]["lost"], f"{checkpoint} not lost {restart}"
            assert not at_prod[checkpoint]["replicated"]
        assert not disagreements(prod, dr), restart
        prod.stop()
        prod.start()
        prod.wait_protecting(GROUP, timeout_s=30)
    assert not set(doomed) & set(listed(dr)), "a lost checkpoint id exists at dr"
