"""Delta sync against a pre-seeded replica, against ``rsync --inplace --no-whole-file``.

Usage: ``.venv/bin/python bench/delta_sync.py [--size 4G] [--changed 0.01] [--caches cold]``

What runs, in one invocation, all files in one work directory (one file system):
- ``source.raw``: ``--size`` bytes of incompressible data (AES-CTR keystream from
  ``openssl enc``, seeded, so every run has the same bytes); copied twice, as a "backup"
  taken before the change: ``replica.raw`` (the pre-seed at the recovery site) and
  ``rsync-dst.raw`` (rsync's destination). Then ``--changed`` of the source's 4 KiB blocks
  are overwritten with fresh random bytes at random places (seeded); fsynced.
- **Seawall**: two real sites; ``source.raw`` is added to the protected site as a volume
  (``POST /api/v1/volumes/add``), then a group is created with ``preseed`` pointing the
  recovery site at ``replica.raw``. Timed from the group-create request until the group is
  ``protecting`` (its delta sync complete) *and* everything the sync shipped is durable in
  the recovery journal (``acked_seq`` reached the ``last_seq`` of that moment).
- **rsync**: ``rsync --inplace --no-whole-file --ignore-times --stats source.raw
  rsync-dst.raw``, timed (without ``--ignore-times`` rsync takes the destination, of the
  same size, for up to date and does nothing);
  rsync does not fsync, so the fsync of the destination that follows is timed apart and
  the ratio is given both without it (the headline: the strictest for us) and with it.

Caches: with ``--caches cold`` (default) the page cache is written back and dropped before
each timed run (needs root; the document says whether it happened); ``warm`` reads every
file once before each timed run instead.

Correctness: after the sync a checkpoint is tagged, exported at the recovery site with
``seawall export app disk0 --checkpoint ID`` and read back whole over NBD (``nbdcopy``);
its sha256 must equal the source's. rsync's result is hashed the same way. The benchmark
fails if either differs.

Results: a table on stdout and a JSON document in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nbd_writes import machine
from seawall.units import parse_size_bytes
from sitepair import (
    GROUP,
    RESULTS_DIR,
    VOLUME,
    CpuMeter,
    SitePair,
    StatusSampler,
    agent_pid,
    drop_caches,
    progress,
    seawall_cli,
    wait_for_quiet,
    wait_until,
    workdir,
)

BLOCK_BYTES = 4096
TARGET_SPEEDUP = 3.0
SYNC_TIMEOUT_S = 3600.0
HASH_CHUNK_BYTES = 4 << 20


@dataclass
class SeawallRun:
    total_s: float
    protecting_s: float
    shipped_bytes: int
    compared_bytes: int
    peak_buffered_bytes: int
    prod_agent_cpu_s: float
    dr_agent_cpu_s: float
    cpu: dict[str, float]
    export_sha256: str


@dataclass
class RsyncRun:
    rsync_s: float
    fsync_s: float
    literal_bytes: int
    matched_bytes: int
    cpu: dict[str, float]
    result_sha256: str


def make_source(path: Path, size_bytes: int, seed: int) -> None:
    """``size_bytes`` of AES-CTR keystream: incompressible, fast, the same for one seed."""
    with path.open("wb") as out:
        keystream = subprocess.Popen(
            ["openssl", "enc", "-aes-128-ctr", "-nosalt", "-pbkdf2", "-pass",
             f"pass:seawall-bench-{seed}", "-in", "/dev/zero"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert keystream.stdout is not None
        left = size_bytes
        while left:
            chunk = keystream.stdout.read(min(HASH_CHUNK_BYTES, left))
            if not chunk:
                raise RuntimeError("openssl ended early")
            out.write(chunk)
            left -= len(chunk)
        keystream.kill()
        keystream.wait()
        out.flush()
        os.fsync(out.fileno())


def change_blocks(path: Path, fraction: float, seed: int) -> list[int]:
    """Overwrite ``fraction`` of the 4 KiB blocks of ``path`` with random bytes; their numbers."""
    block_count = path.stat().st_size // BLOCK_BYTES
    rng = random.Random(seed)
    blocks = sorted(rng.sample(range(block_count), round(block_count * fraction)))
    fd = os.open(path, os.O_WRONLY)
    try:
        for block in blocks:
            os.pwrite(fd, rng.randbytes(BLOCK_BYTES), block * BLOCK_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
    return blocks


def copy_file(source: Path, destination: Path) -> None:
    shutil.copyfile(source, destination)
    with destination.open("rb+") as handle:
        os.fsync(handle.fileno())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_nbd(uri: str) -> str:
    """sha256 of a whole NBD export, read by ``nbdcopy`` (a real client)."""
    digest = hashlib.sha256()
    reader = subprocess.Popen(["nbdcopy", uri, "-"], stdout=subprocess.PIPE)
    assert reader.stdout is not None
    while chunk := reader.stdout.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
    if reader.wait() != 0:
        raise RuntimeError(f"nbdcopy {uri} failed ({reader.returncode})")
    return digest.hexdigest()


def read_through(paths: list[Path]) -> None:
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(HASH_CHUNK_BYTES):
                pass


def prepare_caches(mode: str, paths: list[Path]) -> bool:
    """Cold: write back and drop the page cache; warm: read ``paths`` once. True if done."""
    if mode == "cold":
        return drop_caches()
    read_through(paths)
    return True


def run_seawall(pair: SitePair, source: Path, replica: Path, caches: str) -> SeawallRun:
    prod, dr = pair.prod, pair.dr
    prod.api.post("/api/v1/volumes/add", {"name": VOLUME, "path": str(source)})
    replica = pair.seed_at_recovery(replica)
    if not prepare_caches(caches, [source, replica]):
        raise RuntimeError("could not drop the page cache (not root?): use --caches warm")
    meter = CpuMeter()
    meter.start(pair.pids())
    prod_meter, dr_meter = CpuMeter(), CpuMeter()
    prod_meter.start([agent_pid(prod)])
    dr_meter.start([agent_pid(dr)])
    started = time.monotonic()
    prod.api.post("/api/v1/groups", {"name": GROUP, "volumes": [VOLUME], "to": "dr",
                                     "checkpoint_interval_s": 1.0,
                                     "preseed": {VOLUME: str(replica)}})
    sampler = StatusSampler(prod, 0.25).start()
    target_seq = 0

    def synced() -> bool:
        nonlocal target_seq
        status = prod.group_status(GROUP)
        if status["state"] != "protecting":
            return False
        if not target_seq:
            target_seq = status["last_seq"]
        return int(status["acked_seq"]) >= target_seq

    def protecting() -> bool:
        return bool(prod.group_status(GROUP)["state"] == "protecting")

    protecting_s = wait_until("delta sync", protecting, SYNC_TIMEOUT_S, poll_s=0.02)
    wait_until("delta sync durable", synced, SYNC_TIMEOUT_S, poll_s=0.02)
    total_s = time.monotonic() - started
    cpu = meter.stop()
    prod_cpu, dr_cpu = prod_meter.stop(), dr_meter.stop()
    samples = sampler.stop()
    sync = prod.group_status(GROUP)["sync"]

    progress("verifying: tag a checkpoint, export it at the recovery site, hash it")
    checkpoint = prod.api.post(f"/api/v1/groups/{GROUP}/checkpoints", {"name": "after-sync"})
    dr.wait_checkpoint(GROUP, checkpoint["id"], timeout_s=120.0)
    uri = seawall_cli(dr, "export", GROUP, VOLUME, "--checkpoint",
                      str(checkpoint["id"])).strip()
    try:
        export_sha256 = sha256_nbd(uri)
    finally:
        seawall_cli(dr, "export", "--stop", uri)
    return SeawallRun(
        total_s=total_s, protecting_s=protecting_s,
        shipped_bytes=int(sync["shipped_bytes"]), compared_bytes=int(sync["done_bytes"]),
        peak_buffered_bytes=max((s["buffered_bytes"] for _, s in samples), default=0),
        prod_agent_cpu_s=prod_cpu["our_cores"] * prod_cpu["wall_s"],
        dr_agent_cpu_s=dr_cpu["our_cores"] * dr_cpu["wall_s"],
        cpu=cpu, export_sha256=export_sha256,
    )


RSYNC = ["rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats"]
"""``--ignore-times``: without it (and without ``--times``) rsync skips a destination of the
same size as "up to date" and copies nothing at all. ``--stats`` only reports."""
_STAT = re.compile(r"^(Literal|Matched) data: ([\d,]+) bytes", re.MULTILINE)


def run_rsync(source: Path, destination: Path, caches: str, log: Path) -> RsyncRun:
    if not prepare_caches(caches, [source, destination]):
        raise RuntimeError("could not drop the page cache (not root?): use --caches warm")
    meter = CpuMeter()
    meter.start()
    started = time.monotonic()
    result = subprocess.run([*RSYNC, str(source), str(destination)], capture_output=True,
                            text=True, check=False)
    rsync_s = time.monotonic() - started
    with log.open("a") as handle:
        handle.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"rsync failed ({result.returncode}): {result.stderr.strip()}")
    started = time.monotonic()
    fd = os.open(destination, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_s = time.monotonic() - started
    cpu = meter.stop()
    stats = {kind: int(value.replace(",", "")) for kind, value in _STAT.findall(result.stdout)}
    return RsyncRun(rsync_s=rsync_s, fsync_s=fsync_s, literal_bytes=stats.get("Literal", -1),
                    matched_bytes=stats.get("Matched", -1), cpu=cpu,
                    result_sha256=sha256_file(destination))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="4G", help="volume size (default 4G)")
    parser.add_argument("--changed", type=float, default=0.01,
                        help="fraction of 4 KiB blocks changed (default 0.01)")
    parser.add_argument("--caches", choices=("cold", "warm"), default="cold")
    parser.add_argument("--seed", type=int, default=1, help="seed of the data and the changes")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="wait for a 1-minute load average below this before measuring")
    parser.add_argument("--quiet-timeout", type=float, default=900.0,
                        help="give up waiting for a quiet machine after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    size_bytes = parse_size_bytes(args.size)
    for tool in ("rsync", "openssl", "nbdcopy"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2

    started_at = time.strftime("%Y%m%d-%H%M%S")
    with workdir("seawall-delta-", args.keep) as directory:
        source, replica = directory / "source.raw", directory / "replica.raw"
        rsync_dst = directory / "rsync-dst.raw"
        progress(f"making {args.size} of data and two copies in {directory}")
        make_source(source, size_bytes, args.seed)
        copy_file(source, replica)
        copy_file(source, rsync_dst)
        changed = change_blocks(source, args.changed, args.seed)
        source_sha256 = sha256_file(source)
        progress(f"{len(changed)} blocks changed ({len(changed) * BLOCK_BYTES / 2**20:.1f} MiB)")
        quiet = wait_for_quiet(args.max_load, args.quiet_timeout)
        with (directory / "sites.log").open("w") as log, SitePair(directory, log) as pair:
            progress(f"seawall: delta sync ({args.caches} caches)")
            seawall = run_seawall(pair, source, replica, args.caches)
        progress(f"seawall: {seawall.total_s:.1f} s, shipped "
                 f"{seawall.shipped_bytes / 2**20:.1f} MiB")
        progress(f"rsync ({args.caches} caches)")
        rsync = run_rsync(source, rsync_dst, args.caches, directory / "rsync.log")
        progress(f"rsync: {rsync.rsync_s:.1f} s (+ fsync {rsync.fsync_s:.1f} s)")

    seawall_ok = seawall.export_sha256 == source_sha256
    rsync_ok = rsync.result_sha256 == source_sha256
    speedup = rsync.rsync_s / seawall.total_s
    speedup_durable = (rsync.rsync_s + rsync.fsync_s) / seawall.total_s
    met = speedup >= TARGET_SPEEDUP and seawall_ok
    target_what = "delta sync >= 3x faster than rsync --inplace --no-whole-file"
    summary = {
        "speedup_vs_rsync": speedup, "speedup_vs_rsync_fsync": speedup_durable,
        "seawall_correct": seawall_ok, "rsync_correct": rsync_ok,
        "target": {"what": target_what, "ratio": speedup, "met": met},
    }
    document = {
        "benchmark": "delta_sync", "started_at": started_at,
        "command": " ".join([".venv/bin/python", "bench/delta_sync.py", *sys.argv[1:]]),
        "parameters": {"size_bytes": size_bytes, "changed_fraction": args.changed,
                       "changed_blocks": len(changed), "block_bytes": BLOCK_BYTES,
                       "caches": args.caches, "seed": args.seed},
        "machine": {**machine(), "rsync": subprocess.run(
            ["rsync", "--version"], capture_output=True, text=True).stdout.splitlines()[0]},
        "load": quiet, "source_sha256": source_sha256,
        "summary": summary, "seawall": asdict(seawall), "rsync": asdict(rsync),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"delta_sync-{started_at}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    mib = 2**20
    print(f"{'run':<16} {'time s':>7} {'sent MiB':>9} {'CPU s':>6} {'other cores':>11} "
          f"{'sha256 ok':>9}")
    print(f"{'seawall':<16} {seawall.total_s:>7.2f} {seawall.shipped_bytes / mib:>9.1f} "
          f"{seawall.prod_agent_cpu_s + seawall.dr_agent_cpu_s:>6.1f} "
          f"{seawall.cpu['other_cores']:>11.2f} {seawall_ok!s:>9}")
    print(f"{'rsync':<16} {rsync.rsync_s:>7.2f} {rsync.literal_bytes / mib:>9.1f} "
          f"{rsync.cpu['our_cores'] * rsync.cpu['wall_s']:>6.1f} "
          f"{rsync.cpu['other_cores']:>11.2f} {rsync_ok!s:>9}")
    print(f"{'rsync + fsync':<16} {rsync.rsync_s + rsync.fsync_s:>7.2f}")
    print(f"seawall: protecting after {seawall.protecting_s:.2f} s, durable after "
          f"{seawall.total_s:.2f} s; changed {len(changed) * BLOCK_BYTES / mib:.1f} MiB")
    print(f"\ntarget: {target_what}: {speedup:.2f}x "
          f"({speedup_durable:.2f}x counting rsync's fsync) -> {'MET' if met else 'NOT MET'}")
    print(f"results: {path}")
    return 0 if seawall_ok and rsync_ok else 1


if __name__ == "__main__":
    sys.exit(main())
