"""Bitmap and delta syncs end to end: they ship only what differs, and stay exact.

Each test drives two real sites, keeps a reference model of the protected volume, and
checks every checkpoint it made against the recovery site's export of it, byte for byte.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import pytest

from seawall.localsites import LocalSite
from support.cli import seawall
from support.groups import GROUP, protect, states_until_protecting, tag, write
from support.groups import verify as verify_exports
from support.tmpfs import fill, mounted_tmpfs

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 32 << 20


def test_clean_restart_keeps_the_dirty_map_and_runs_a_bitmap_sync(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    uri = protect(prod, dr, model, count=64)
    expected = {tag(prod, dr, "before"): hashlib.sha256(model).hexdigest()}
    dr.stop()
    written = write(uri, model, random.Random(2), count=32)  # 2 MiB while the link is down
    prod.stop()  # clean: the unsent writes become the saved dirty map
    prod.start()
    status = prod.group_status(GROUP)
    assert status["state"] == "bitmap-sync" and status["phase"] == "tracking"
    assert 0 < status["dirty_bytes"] <= written
    dr.start()
    states = states_until_protecting(prod)
    assert "delta-sync" not in states and "initial-sync" not in states, states
    status = prod.group_status(GROUP)
    assert 0 < status["sync"]["shipped_bytes"] <= written
    expected[tag(prod, dr, "after")] = hashlib.sha256(model).hexdigest()
    verify_exports(dr, expected, VOLUME_BYTES)
    assert "bitmap-sync from seq" in (tmp_path / "sites.log").read_text()


def test_resync_on_request_compares_and_ships_nothing_when_equal(
    sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    protect(prod, dr, model, count=64)
    first = tag(prod, dr, "first")
    result = seawall(prod, "group", "resync", GROUP)
    assert "delta-sync" in result.stderr
    states_until_protecting(prod)
    sync = prod.group_status(GROUP)["sync"]
    assert sync["done_bytes"] == VOLUME_BYTES and sync["shipped_bytes"] == 0
    second = tag(prod, dr, "second")
    expected = dict.fromkeys((first, second), hashlib.sha256(model).hexdigest())
    verify_exports(dr, expected, VOLUME_BYTES)
    missing = seawall(prod, "group", "resync", "nope", check=False)
    assert missing.returncode != 0 and "nope" in missing.stderr


def test_preseeded_replica_ships_only_what_differs(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    """A copy of the volume restored at the recovery site becomes the replica: the first sync
    compares digests and sends the few blocks changed since the copy was made."""
    prod, dr = sites
    seawall(prod, "pair", dr.url, "--token", seawall(dr, "site", "token").stdout.strip())
    volume = prod.api.post("/api/v1/volumes", {"name": "disk0", "size_bytes": VOLUME_BYTES})
    model = bytearray(VOLUME_BYTES)
    write(volume["nbd_uri"], model, random.Random(5), count=128)  # 8 MiB of data
    seeds = dr.directory / "seeds"  # in the recovery site's data directory: allowed
    seeds.mkdir()
    seed = seeds / "restored-from-backup.raw"
    seed.write_bytes(model)
    changed = write(volume["nbd_uri"], model, random.Random(6), count=4)  # since the backup

    wrong = seeds / "wrong-size.raw"
    wrong.write_bytes(bytes(4096))
    refused = seawall(prod, "group", "create", GROUP, "--volume", "disk0", "--to", "dr",
                      "--preseed", str(wrong), check=False)
    assert refused.returncode != 0 and "4096 bytes" in refused.stderr
    # A pre-seed becomes the replica, written as the agent's user: never a file outside
    # what the recovery site's admin allows (its data directory, `--storage-root`).
    elsewhere = tmp_path / "elsewhere.raw"
    elsewhere.write_bytes(bytes(VOLUME_BYTES))
    refused = seawall(prod, "group", "create", GROUP, "--volume", "disk0", "--to", "dr",
                      "--preseed", str(elsewhere), check=False)
    assert refused.returncode == 2 and "outside the directories" in refused.stderr
    assert prod.api.get("/api/v1/groups") == [] and dr.api.get("/api/v1/groups") == []

    seawall(prod, "group", "create", GROUP, "--volume", "disk0", "--to", "dr",
            "--checkpoint-interval", "500ms", "--preseed", f"disk0={seed}")
    prod.wait_protecting(GROUP)
    sync = prod.group_status(GROUP)["sync"]
    assert sync["done_bytes"] == VOLUME_BYTES
    assert 0 < sync["shipped_bytes"] <= changed
    checkpoint = tag(prod, dr, "after-preseed")
    verify_exports(dr, {checkpoint: hashlib.sha256(model).hexdigest()}, VOLUME_BYTES)


def test_full_journal_filesystem_pauses_then_resumes_by_itself(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    """The recovery site's journal filesystem (a real tmpfs) fills up: the group says
    `paused`, nothing is corrupted, and protection comes back once space returns."""
    prod, dr = sites
    with mounted_tmpfs(dr.config.journals_dir, 96 << 20) as journals:
        model = bytearray(VOLUME_BYTES)
        uri = protect(prod, dr, model, count=64)
        expected = {tag(prod, dr, "before"): hashlib.sha256(model).hexdigest()}
        filler = journals / "filler"
        fill(filler, leave_bytes=2 << 20)
        write(uri, model, random.Random(8), count=96)  # 6 MiB: more than is left
        deadline = time.monotonic() + 30
        while (status := prod.group_status(GROUP))["state"] != "paused":
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status["refusal"]["code"] == "journal_full"
        assert dr.group_status(GROUP)["journal_full"]
        filler.unlink()
        states_until_protecting(prod)
        deadline = time.monotonic() + 30
        while prod.group_status(GROUP)["state"] != "protecting" or \
                prod.group_status(GROUP)["buffered_records"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        expected[tag(prod, dr, "after")] = hashlib.sha256(model).hexdigest()
        # A full journal filesystem makes retention apply the oldest records early (the
        # history is then short), so "before" may have aged out: every checkpoint still
        # offered must be exact, and the new one is offered.
        offered = {c["id"] for c in dr.api.get(f"/api/v1/groups/{GROUP}/checkpoints")}
        verify_exports(dr, {c: h for c, h in expected.items() if c in offered}, VOLUME_BYTES)
        assert max(expected) in offered
