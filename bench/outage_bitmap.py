"""Dirty-map memory during a recovery-site outage under random writes, and the resend after.

Usage: ``.venv/bin/python bench/outage_bitmap.py [--outage-s 600] [--bitmap 1M] [--iops 100]``

What runs, in one invocation:
- two real sites, ``prod`` protecting a sparse volume of ``--volume-size`` (64 GiB) to
  ``dr`` with a checkpoint every 1 s; agents with ``--bitmap`` as the per-volume bound of
  the dirty map and ``--buffer`` as the buffer for unsent writes (small, so that the group
  overflows to tracking early in the outage instead of buffering the first minutes);
- once the group is ``protecting``, the recovery site is stopped (SIGTERM) for
  ``--outage-s`` seconds, during which a writer of ours sends 4 KiB writes of random data
  at uniformly random 4 KiB-aligned offsets (seeded) through NBD at ``--iops``, and keeps
  the set of blocks it wrote: their union is the *bytes really changed*;
- every second: the protected group's ``dirty_map_bytes`` (the dirty map's accounted
  memory), ``dirty_bytes``, state, and the protected agent's resident memory (VmRSS);
- then the recovery site is started again; timed until the group is ``protecting`` and
  everything shipped is durable at the recovery site (``acked_seq`` reached the
  ``last_seq`` of that moment). Reported: ``sync.shipped_bytes`` against the bytes really
  changed, and the time split into the site's start, the protected agent's reconnect
  (its backoff reaches 10 s during a long outage) and the bitmap sync proper (from the
  first status sample with the link up, sampled every 0.5 s).
- verification: a checkpoint tagged after the sync is exported at the recovery site and
  every block the writer wrote is read back from it and from the protected volume; they
  must be equal (the rest of the volume was never written: zeros on both sides).

Pass/fail: ``dirty_map_bytes`` must never exceed the bound. The resend ratio is reported,
not judged: with uniformly random writes the map's fine level (one entry per 1 MiB region
touched) runs out at ``bound / 200 B`` regions, past which whole 1 MiB regions are resent.

Results: a table on stdout and a JSON document in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nbd_writes import machine
from seawall.nbd.blocking import NbdClient
from seawall.units import parse_size_bytes
from sitepair import (
    GROUP,
    RESULTS_DIR,
    VOLUME,
    CpuMeter,
    SitePair,
    StatusSampler,
    agent_pid,
    progress,
    seawall_cli,
    stop_site,
    wait_for_quiet,
    wait_until,
    workdir,
)

BLOCK_BYTES = 4096
SYNC_TIMEOUT_S = 7200.0


class RandomWriter(threading.Thread):
    """4 KiB writes of random bytes at random blocks, at a steady rate, until stopped."""

    def __init__(self, uri: str, size_bytes: int, iops: float, seed: int) -> None:
        super().__init__(name="random-writer", daemon=True)
        self.uri = uri
        self.block_count = size_bytes // BLOCK_BYTES
        self.interval_s = 1.0 / iops
        self.rng = random.Random(seed)
        self.blocks: set[int] = set()
        self.writes = 0
        self.behind_s = 0.0  # how far the writer fell behind its schedule, at worst
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        if self.error is not None:
            raise RuntimeError("the writer failed") from self.error

    def run(self) -> None:
        try:
            with NbdClient(self.uri) as client:
                next_at = time.monotonic()
                while not self._stop_event.is_set():
                    block = self.rng.randrange(self.block_count)
                    client.write(block * BLOCK_BYTES, self.rng.randbytes(BLOCK_BYTES))
                    self.blocks.add(block)
                    self.writes += 1
                    next_at += self.interval_s
                    delay = next_at - time.monotonic()
                    self.behind_s = max(self.behind_s, -delay)
                    if delay > 0:
                        self._stop_event.wait(delay)
        except BaseException as exc:
            self.error = exc


def all_acked(status: dict[str, Any]) -> bool:
    return bool(status["acked_seq"] >= status["last_seq"])


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def blocks_digest(uri: str, blocks: list[int]) -> str:
    digest = hashlib.sha256()
    with NbdClient(uri) as client:
        for block in blocks:
            digest.update(client.read(block * BLOCK_BYTES, BLOCK_BYTES))
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--outage-s", type=float, default=600.0, help="outage length")
    parser.add_argument("--volume-size", default="64G", help="sparse volume size")
    parser.add_argument("--bitmap", default="1M", help="dirty-map bound per volume")
    parser.add_argument("--buffer", default="16M", help="agent buffer for unsent writes")
    parser.add_argument("--iops", type=float, default=100.0, help="random 4 KiB writes/s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-verify", action="store_true",
                        help="skip reading the written blocks back from an export")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="wait for a 1-minute load average below this before measuring")
    parser.add_argument("--quiet-timeout", type=float, default=900.0,
                        help="give up waiting for a quiet machine after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    volume_bytes = parse_size_bytes(args.volume_size)
    bitmap_bytes = parse_size_bytes(args.bitmap)
    buffer_bytes = parse_size_bytes(args.buffer)

    started_at = time.strftime("%Y%m%d-%H%M%S")
    quiet = wait_for_quiet(args.max_load, args.quiet_timeout)
    samples: list[dict[str, Any]] = []
    with workdir("seawall-outage-", args.keep) as directory, \
            (directory / "sites.log").open("w") as log, \
            SitePair(directory, log, buffer_bytes=buffer_bytes,
                     bitmap_bytes=bitmap_bytes) as pair:
        prod, dr = pair.prod, pair.dr
        volume = prod.api.post("/api/v1/volumes", {"name": VOLUME, "size_bytes": volume_bytes})
        prod.api.post("/api/v1/groups", {"name": GROUP, "volumes": [VOLUME], "to": "dr",
                                         "checkpoint_interval_s": 1.0})
        progress(f"initial sync of the {args.volume_size} sparse volume")
        prod.wait_protecting(GROUP, timeout_s=SYNC_TIMEOUT_S)
        # The sync is complete once its last record is durable, not when it was appended:
        # stopping the recovery site before would leave records to resend after the outage.
        wait_until("initial sync durable", lambda: all_acked(pair.status()), SYNC_TIMEOUT_S)
        prod_pid = agent_pid(prod)
        rss_before = rss_bytes(prod_pid)
        progress(f"stopping the recovery site; {args.iops:g} random 4 KiB writes/s for "
                 f"{args.outage_s:g} s")
        stop_site(dr)
        meter = CpuMeter()
        meter.start(pair.pids())
        writer = RandomWriter(volume["nbd_uri"], volume_bytes, args.iops, args.seed)
        outage_started = time.monotonic()
        writer.start()
        next_at = outage_started
        while (elapsed := time.monotonic() - outage_started) < args.outage_s:
            status = pair.status()
            samples.append({"t_s": round(elapsed, 2), "state": status["state"],
                            "phase": status["phase"], "overflows": status["overflows"],
                            "dirty_map_bytes": status["dirty_map_bytes"],
                            "dirty_bytes": status["dirty_bytes"],
                            "buffered_bytes": status["buffered_bytes"],
                            "agent_rss_bytes": rss_bytes(prod_pid),
                            "writes": writer.writes, "changed_bytes":
                                len(writer.blocks) * BLOCK_BYTES})
            if len(samples) % 60 == 0:
                last = samples[-1]
                progress(f"{elapsed:5.0f} s: map {last['dirty_map_bytes'] / 2**10:.0f} KiB, "
                         f"dirty {last['dirty_bytes'] / 2**20:.0f} MiB for "
                         f"{last['changed_bytes'] / 2**20:.0f} MiB changed, "
                         f"{status['state']}/{status['phase']}")
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        writer.stop()
        outage_cpu = meter.stop()
        end_status = pair.status()
        changed_bytes = len(writer.blocks) * BLOCK_BYTES

        progress("starting the recovery site: bitmap sync")
        sampler = StatusSampler(prod, 0.5).start()
        sync_meter = CpuMeter()
        sync_meter.start([prod_pid])
        restarted = time.monotonic()
        dr.start()
        site_start_s = time.monotonic() - restarted
        target_seq = 0

        def synced() -> bool:
            nonlocal target_seq
            status = prod.group_status(GROUP)
            if status["state"] != "protecting":
                return False
            if not target_seq:
                target_seq = status["last_seq"]
            return int(status["acked_seq"]) >= target_seq

        wait_until("bitmap sync", synced, SYNC_TIMEOUT_S, poll_s=0.05)
        resync_s = time.monotonic() - restarted
        sync_cpu = sync_meter.stop()
        sync_samples = sampler.stop()
        after = pair.status()
        # The sampler started just before the site did: its times are from the restart.
        reconnect_s = next((t for t, s in sync_samples if s["link_up"]), resync_s)
        sync_kinds = sorted({s["state"] for _, s in sync_samples if s["state"].endswith("-sync")})

        verified: bool | None = None
        if not args.no_verify:
            progress(f"verifying the {len(writer.blocks)} written blocks through an export")
            checkpoint = prod.api.post(f"/api/v1/groups/{GROUP}/checkpoints",
                                       {"name": "after-outage"})
            dr.wait_checkpoint(GROUP, checkpoint["id"], timeout_s=300.0)
            uri = seawall_cli(dr, "export", GROUP, VOLUME, "--checkpoint",
                              str(checkpoint["id"])).strip()
            blocks = sorted(writer.blocks)
            try:
                verified = blocks_digest(uri, blocks) == blocks_digest(volume["nbd_uri"], blocks)
            finally:
                seawall_cli(dr, "export", "--stop", uri)

    # Without an overflow the outage fits in the buffer and the stream simply resumes: no
    # sync runs (the status still shows the initial sync's figures), the buffer is resent.
    resent_by = "bitmap sync" if sync_kinds else "buffer"
    shipped = (int(after["sync"]["shipped_bytes"]) if sync_kinds
               else int(end_status["buffered_bytes"]))
    peak_map = max(s["dirty_map_bytes"] for s in samples)
    tracking_from = next((s["t_s"] for s in samples if s["phase"] == "tracking"), None)
    summary = {
        "bound_bytes": bitmap_bytes,
        "peak_dirty_map_bytes": peak_map,
        "within_bound": peak_map <= bitmap_bytes,
        "tracking_from_s": tracking_from,
        "writes": writer.writes, "changed_bytes": changed_bytes,
        "dirty_bytes_at_end": end_status["dirty_bytes"],
        "shipped_bytes": shipped,
        "resent_by": resent_by,
        "resend_ratio": shipped / changed_bytes if changed_bytes else float("nan"),
        "resync_s": resync_s,
        "sync_kinds": sync_kinds,
        "site_start_s": site_start_s,
        "reconnect_s": reconnect_s,
        "sync_s": resync_s - reconnect_s,
        "resync_bytes_per_s": shipped / resync_s,
        "sync_bytes_per_s": shipped / max(resync_s - reconnect_s, 1e-3),
        "agent_rss_before_bytes": rss_before,
        "agent_rss_peak_bytes": max(s["agent_rss_bytes"] for s in samples),
        "writer_behind_s": writer.behind_s,
        "outage_cpu": outage_cpu, "sync_cpu": sync_cpu,
        "checkpoint_verified": verified,
        "target": {"what": "dirty-map memory never above its bound during the outage",
                   "met": peak_map <= bitmap_bytes},
    }
    document = {
        "benchmark": "outage_bitmap", "started_at": started_at,
        "command": " ".join([".venv/bin/python", "bench/outage_bitmap.py", *sys.argv[1:]]),
        "parameters": {"outage_s": args.outage_s, "volume_bytes": volume_bytes,
                       "bitmap_bytes": bitmap_bytes, "buffer_bytes": buffer_bytes,
                       "iops": args.iops, "seed": args.seed, "block_bytes": BLOCK_BYTES},
        "machine": machine(), "load": quiet, "summary": summary,
        "status_after_sync": after, "samples": samples,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"outage_bitmap-{started_at}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    mib = 2**20
    print(f"outage {args.outage_s:g} s, {writer.writes} writes of 4 KiB at {args.iops:g}/s "
          f"on {args.volume_size}; bound {bitmap_bytes / 2**10:.0f} KiB; tracking from "
          f"{tracking_from} s")
    print(f"dirty map: peak {peak_map / 2**10:.1f} KiB of {bitmap_bytes / 2**10:.0f} KiB "
          f"-> {'within' if peak_map <= bitmap_bytes else 'ABOVE'} the bound; agent RSS "
          f"{rss_before / mib:.0f} MiB before, {summary['agent_rss_peak_bytes'] / mib:.0f} "
          f"MiB peak")
    print(f"really changed {changed_bytes / mib:.1f} MiB; map said "
          f"{end_status['dirty_bytes'] / mib:.1f} MiB; resent by {resent_by} "
          f"{shipped / mib:.1f} MiB -> "
          f"{summary['resend_ratio']:.2f}x")
    print(f"resync ({', '.join(sync_kinds) or 'none seen'}): {resync_s:.1f} s from restart to "
          f"durable: site up after {site_start_s:.1f} s, link up after {reconnect_s:.1f} s, "
          f"then {resync_s - reconnect_s:.1f} s of sync "
          f"({summary['sync_bytes_per_s'] / 1e6:.0f} MB/s); checkpoint after it verified: "
          f"{verified}")
    print(f"\ntarget: {summary['target']['what']} -> "
          f"{'MET' if summary['target']['met'] else 'NOT MET'}")
    print(f"results: {path}")
    return 0 if summary["within_bound"] and verified is not False else 1


if __name__ == "__main__":
    sys.exit(main())
