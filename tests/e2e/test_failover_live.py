"""Live failover, commit, rollback, move and reverse protection end to end through the CLI.

Two real sites; a reference model of the protected volume, and one of the recovered
volume once it takes writes; every image and volume is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from seawall.nbd.events import NbdError
from support.cli import refused, run_json, seawall
from support.groups import GROUP, protect, tag, verify, write
from support.groups import sha256_of as image_sha256

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 16 << 20




def sha(model: bytearray) -> str:
    return hashlib.sha256(model).hexdigest()


def wait_for(what: str, condition: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_failover_live_with_shutdown_then_commit_and_reverse_protect(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    prod_uri = protect(prod, dr, model, count=32)
    tag(prod, dr, "before")
    write(prod_uri, model, random.Random(2), count=16)  # shipped by the shutdown, untagged

    # A failing pre-recovery script stops the failover before the source is fenced.
    pre = dr.config.scripts_dir / "pre.sh"
    pre.write_text(f"#!/bin/sh\necho $SEAWALL_KIND $SEAWALL_CHECKPOINT > {tmp_path}/ran\n"
                   "exit 2\n")
    pre.chmod(0o755)
    seawall(prod, "group", "update", GROUP, "--pre-script", "pre.sh")
    failed = refused(dr, "failover", "live", GROUP, "--shutdown-source")
    assert failed.returncode == 7 and "pre-recovery script" in failed.stderr
    assert (tmp_path / "ran").read_text() == "failover-live final\n"
    assert prod.group_status(GROUP)["state"] == "protecting"
    write(prod_uri, model, random.Random(5), count=4)  # the source still takes writes
    seawall(prod, "group", "update", GROUP, "--pre-script", "none")

    live = run_json(dr, "failover", "live", GROUP, "--shutdown-source")
    assert live["state"] == "running" and live["kind"] == "failover-live"
    assert live["checkpoint"]["name"].startswith("failover ")
    [image] = live["images"]
    assert image["volume"] == "disk0" and image["name"] == "disk0"
    assert image_sha256(image["uri"], VOLUME_BYTES) == sha(model)  # nothing lost

    # The source takes no writes any more; its group says why.
    with pytest.raises(NbdError), NbdClient(prod_uri) as client:
        client.write(0, b"late" * 1024)
    assert prod.group_status(GROUP)["state"] == "failed-over"
    assert "already has a failover-live" in refused(dr, "failover", "live", GROUP).stderr
    assert "already has a failover-live" in refused(dr, "failover", "test", GROUP).stderr

    # The recovered machine writes to its image; commit makes it the volume here.
    write(image["uri"], model, random.Random(3), count=8)
    report = run_json(dr, "failover", "commit", GROUP, "--reverse-protect")
    assert report["state"] == "committed" and report["kind"] == "failover-live"
    assert [s["step"] for s in report["steps"]][-1] == "images consolidated into volumes"
    volumes = {v["name"]: v for v in run_json(dr, "volume", "list")}
    assert image_sha256(volumes["disk0"]["nbd_uri"], VOLUME_BYTES) == sha(model)
    assert not (dr.directory / "agent" / "journals" / live["group_id"]).exists()
    assert "protected from this site" in refused(dr, "failover", "commit", GROUP).stderr

    # Reverse protection: dr protects disk0 back to prod, comparing with the old volume.
    assert report["reverse"]["role"] == "protected"
    dr.wait_protecting(GROUP)
    sync = dr.group_status(GROUP)["sync"]
    assert sync["shipped_bytes"] < VOLUME_BYTES // 2, sync  # a delta, not a full copy
    write(volumes["disk0"]["nbd_uri"], model, random.Random(4), count=4)
    checkpoint = tag(dr, prod, "after-reverse")
    verify(prod, {checkpoint: sha(model)}, VOLUME_BYTES)


def test_rollback_by_policy_and_manager_killed_mid_failover(
    sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    prod_uri = protect(prod, dr, model, count=32)
    first = tag(prod, dr, "first")
    expected = {first: sha(model)}

    # Without --shutdown-source the source goes on writing; the recovery site takes none
    # of it while failed over, and the rollback policy ends the failover by itself.
    live = run_json(dr, "failover", "live", GROUP, "--checkpoint", str(first),
                    "--commit-policy", "rollback", "--commit-after", "3s")
    [image] = live["images"]
    assert image_sha256(image["uri"], VOLUME_BYTES) == expected[first]
    with NbdClient(image["uri"]) as client:
        client.write(0, b"discarded" * 100)
        client.flush()
    write(prod_uri, model, random.Random(5), count=8)
    wait_for("the source paused", lambda: prod.group_status(GROUP)["state"] == "paused")
    rolled = wait_for("the rollback policy", lambda: next(
        (r for r in run_json(dr, "report", "list") if r["id"] == live["id"]), None))
    assert rolled["state"] == "rolled-back" and rolled["user"]
    prod.wait_protecting(GROUP)
    second = tag(prod, dr, "second")
    expected[second] = sha(model)
    verify(dr, expected, VOLUME_BYTES)  # the journal and replica never saw the image's write

    # The recovery site's manager is killed while a failover with shutdown is under way.
    assert dr.process is not None
    command = [sys.executable, "-m", "seawall", "--url", dr.url, "failover", "live", GROUP,
               "--shutdown-source", "--json"]
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "SEAWALL_TOKEN": dr.token})
    time.sleep(0.5)
    dr.process.kill()
    dr.process.wait()
    running.wait(30)
    dr.start()
    status = wait_for("the reconciled failover", lambda: _live_state(dr))
    if status == "running":  # it got that far before the kill: roll it back by hand
        assert run_json(dr, "failover", "rollback", GROUP)["state"] == "rolled-back"
    else:
        assert status == "none"  # rolled back at restart
    reports = [r for r in run_json(dr, "report", "list") if r["kind"] == "failover-live"]
    assert reports[-1]["state"] in ("failed", "rolled-back")
    # The source takes writes again, protection resumes, every checkpoint still reads back.
    wait_for("the source unfenced", lambda: prod.group_status(GROUP)["state"] != "failed-over")
    write(prod_uri, model, random.Random(6), count=4)
    third = tag(prod, dr, "third")
    expected[third] = sha(model)
    verify(dr, expected, VOLUME_BYTES)


def test_move_is_a_zero_loss_migration(sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    prod_uri = protect(prod, dr, model, count=16)
    write(prod_uri, model, random.Random(7), count=8)
    report = run_json(dr, "move", GROUP)
    assert report["kind"] == "move" and report["state"] == "committed"
    volumes = {v["name"]: v for v in run_json(dr, "volume", "list")}
    assert image_sha256(volumes["disk0"]["nbd_uri"], VOLUME_BYTES) == sha(model)
    assert dr.api.get(f"/api/v1/groups/{GROUP}")["role"] == "failed-over"
    assert "committed" in refused(dr, "failover", "live", GROUP).stderr


def _live_state(site: LocalSite) -> str | None:
    """``none`` or ``running`` once the group's live failover is settled, else None."""
    operation = site.api.get(f"/api/v1/failover/{GROUP}/live")["operation"]
    if operation is None:
        return "none"
    return "running" if operation["state"] == "running" else None
