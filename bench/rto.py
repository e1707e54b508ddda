"""RTO of ``seawall failover test`` and read throughput of a recovered image over NBD.

Usage: ``.venv/bin/python bench/rto.py [--sizes 1G,10G] [--journal 1G] [--bs 64k] [--runs 3]``

What runs, in one invocation, on two real sites on this machine (``prod`` protects, ``dr``
recovers; checkpoints every 1 s, ``--history 7d`` so nothing ages out of the journal):

- **RTO.** One group per size in ``--sizes``, each with one *sparse* volume of that size.
  After the initial sync, fio (nbd engine, ``--rw=randwrite --bs=--bs``, fresh random
  buffers, ``--io_size=--journal`` spread over the whole volume) writes ``--journal`` bytes
  into it; once all of it is durable at ``dr`` a checkpoint is tagged. Then, ``--runs``
  times per group (groups alternate; caches ``warm`` — as left — and ``cold`` — written
  back and dropped right before — alternate too):
  ``seawall failover test GROUP --checkpoint latest --json`` is run as a user runs it
  (a new process; its wall time until it exits with the URIs), then each image's first
  4 KiB is read over NBD by ``qemu-io`` (a new process): **RTO as the user sees it** is the
  sum. The product's own figure (``rto_s`` in the answer and the report: from the request
  reaching the manager to a first read of every image done) is recorded beside it, and so
  is the wall time of ``seawall --help`` (the CLI's start-up alone) as a reference. Then
  ``seawall failover stop GROUP``. Target: at most 1 s, and the same for every size.
- **Read throughput.** A group with one volume of ``--read-size`` holding incompressible
  data (AES-CTR keystream), protected with ``preseed`` (the recovery site's replica is a
  copy of it, so the replica file holds real data), then ``--journal`` bytes written
  through NBD as above. A failover test of it is started, and ``--read-rounds`` times, with
  the page cache dropped before each read: ``nbdcopy IMAGE-URI null:`` (the whole image:
  replica + journal over NBD) and ``nbdcopy REPLICA-FILE null:`` (the replica file read
  directly; same tool), in alternating order. Ratio = image MB/s / replica MB/s (medians).

Results: tables on stdout and a JSON document in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import run_fio
from delta_sync import copy_file, make_source
from nbd_writes import machine
from seawall.localsites import LocalSite
from seawall.units import parse_size_bytes
from sitepair import (
    RESULTS_DIR,
    CpuMeter,
    SitePair,
    drop_caches,
    load_average,
    progress,
    seawall_cli,
    wait_for_quiet,
    wait_until,
    workdir,
)

TARGET_RTO_S = 1.0
CHECKPOINT_INTERVAL_S = 1.0
HISTORY_S = 7 * 86400.0
FIRST_READ = "read 0 4096"
READ_GROUP = "seqread"


def protect(pair: SitePair, group: str, volume: str, size_bytes: int,
            preseed: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """A volume (sparse, or an existing file) and its group; returns the volume."""
    prod = pair.prod
    if preseed is None:
        info = prod.api.post("/api/v1/volumes", {"name": volume, "size_bytes": size_bytes})
        extra: dict[str, Any] = {}
    else:
        source, replica = preseed
        info = prod.api.post("/api/v1/volumes/add", {"name": volume, "path": str(source)})
        extra = {"preseed": {volume: str(replica)}}
    prod.api.post("/api/v1/groups", {
        "name": group, "volumes": [volume], "to": "dr",
        "checkpoint_interval_s": CHECKPOINT_INTERVAL_S, "history_s": HISTORY_S, **extra})
    return dict(info)


def wait_durable(site: LocalSite, group: str, timeout_s: float) -> None:
    """Until the group is protecting and the recovery site fsynced all it was sent."""
    target_seq = 0

    def durable() -> bool:
        nonlocal target_seq
        status = site.group_status(group)
        if status["state"] != "protecting":
            return False
        if not target_seq:
            target_seq = int(status["last_seq"])
        return int(status["acked_seq"]) >= target_seq

    wait_until(f"group {group} durable", durable, timeout_s, poll_s=0.1)


def write_journal(uri: str, size_bytes: int, journal_bytes: int, block: str) -> dict[str, Any]:
    """``journal_bytes`` of fresh random data in random ``block`` writes over the volume."""
    started = time.monotonic()
    fio = run_fio(["fio", "--name=journal", "--ioengine=nbd", f"--uri={uri}",
                   "--rw=randwrite", f"--bs={block}", "--iodepth=16", f"--size={size_bytes}",
                   f"--io_size={journal_bytes}", "--norandommap", "--randrepeat=0",
                   "--refill_buffers", "--output-format=json"], timeout_s=3600)
    return {"wall_s": round(time.monotonic() - started, 2), "iops": round(fio.iops),
            "bytes_per_s": round(fio.bytes_per_s)}


def tag_checkpoint(pair: SitePair, group: str) -> int:
    checkpoint = pair.prod.api.post(f"/api/v1/groups/{group}/checkpoints", {"name": "bench"})
    pair.dr.wait_checkpoint(group, checkpoint["id"], timeout_s=300.0)
    return int(checkpoint["id"])


def timed_cli(site: LocalSite, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    output = seawall_cli(site, *args)
    return time.monotonic() - started, output


def first_read(uri: str) -> float:
    """Wall time of ``qemu-io`` opening the image and reading its first 4 KiB."""
    started = time.monotonic()
    subprocess.run(["qemu-io", "-f", "raw", "-c", FIRST_READ, uri], check=True,
                   capture_output=True, timeout=60)
    return time.monotonic() - started


def failover_once(pair: SitePair, group: str, caches: str) -> dict[str, Any]:
    dropped = drop_caches() if caches == "cold" else False
    load = load_average()
    meter = CpuMeter()
    meter.start(pair.pids())
    cli_s, output = timed_cli(pair.dr, "failover", "test", group, "--json")
    test = json.loads(output)
    reads_s = [first_read(image["uri"]) for image in test["images"]]
    cpu = meter.stop()
    stop_s, _ = timed_cli(pair.dr, "failover", "stop", group, "--result", "pass",
                          "--notes", "bench/rto.py")
    return {"group": group, "caches": caches, "caches_dropped": dropped,
            "cli_s": round(cli_s, 3), "first_reads_s": [round(s, 3) for s in reads_s],
            "user_rto_s": round(cli_s + sum(reads_s), 3), "product_rto_s": test["rto_s"],
            "operation": test["id"], "stop_s": round(stop_s, 3), "load_average": load,
            "cpu": cpu, "steps": test.get("steps")}


def cli_startup(site: LocalSite) -> float:
    return timed_cli(site, "--help")[0]


def nbdcopy_s(source: str) -> float:
    started = time.monotonic()
    subprocess.run(["nbdcopy", source, "null:"], check=True, capture_output=True,
                   timeout=3600)
    return time.monotonic() - started


def read_throughput(pair: SitePair, directory: Path, size_bytes: int, journal_bytes: int,
                    block: str, rounds: int) -> dict[str, Any]:
    source, replica = directory / "source.raw", directory / "replica.raw"
    progress(f"read throughput: {size_bytes / 2**30:g} GiB of data and its copy")
    make_source(source, size_bytes, seed=1)
    copy_file(source, replica)
    replica = pair.seed_at_recovery(replica)
    volume = protect(pair, READ_GROUP, "seq0", size_bytes, preseed=(source, replica))
    wait_durable(pair.prod, READ_GROUP, timeout_s=3600.0)
    progress(f"read throughput: writing {journal_bytes / 2**30:g} GiB into the journal")
    fio = write_journal(volume["nbd_uri"], size_bytes, journal_bytes, block)
    wait_durable(pair.prod, READ_GROUP, timeout_s=3600.0)
    tag_checkpoint(pair, READ_GROUP)
    status = pair.dr.group_status(READ_GROUP)
    test = json.loads(seawall_cli(pair.dr, "failover", "test", READ_GROUP, "--json"))
    uri = test["images"][0]["uri"]
    runs: list[dict[str, Any]] = []
    try:
        for number in range(rounds):
            order = [("image", uri), ("replica", str(replica))]
            if number % 2:
                order.reverse()
            for what, target in order:
                dropped = drop_caches()
                load = load_average()
                meter = CpuMeter()
                meter.start(pair.pids())
                seconds = nbdcopy_s(target)
                runs.append({"round": number + 1, "what": what, "seconds": round(seconds, 3),
                             "bytes_per_s": round(size_bytes / seconds),
                             "caches_dropped": dropped, "load_average": load,
                             "cpu": meter.stop()})
                progress(f"  {what} r{number + 1}: {size_bytes / seconds / 1e6:.0f} MB/s")
    finally:
        seawall_cli(pair.dr, "failover", "stop", READ_GROUP)
    medians = {what: statistics.median(r["bytes_per_s"] for r in runs if r["what"] == what)
               for what in ("image", "replica")}
    return {"size_bytes": size_bytes, "journal_status": status, "fio": fio, "runs": runs,
            "median_bytes_per_s": medians, "ratio": medians["image"] / medians["replica"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1G,10G", help="sparse volume sizes, one group each")
    parser.add_argument("--journal", default="1G", help="bytes written into each journal")
    parser.add_argument("--bs", default="64k", help="fio block size of the journal writes")
    parser.add_argument("--runs", type=int, default=6,
                        help="failover tests per group (caches alternate warm/cold)")
    parser.add_argument("--read-size", default="4G",
                        help="volume of the read-throughput part (0: skip that part)")
    parser.add_argument("--read-rounds", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="wait for a 1-minute load average below this before measuring")
    parser.add_argument("--quiet-timeout", type=float, default=900.0,
                        help="give up waiting for a quiet machine after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    sizes = [parse_size_bytes(size) for size in args.sizes.split(",")]
    journal_bytes = parse_size_bytes(args.journal)
    read_bytes = parse_size_bytes(args.read_size)
    for tool in ("fio", "qemu-io", "nbdcopy", "openssl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make setup installs it)", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("needs root (drops the page cache)", file=sys.stderr)
        return 2

    started_at = time.strftime("%Y%m%d-%H%M%S")
    groups = [(f"rto{number}", f"vol{number}", size) for number, size in enumerate(sizes)]
    with workdir("seawall-rto-", args.keep) as directory, \
            (directory / "sites.log").open("w") as log, SitePair(directory, log) as pair:
        prepared: dict[str, Any] = {}
        for group, volume, size in groups:
            progress(f"{group}: {size / 2**30:g} GiB sparse volume, initial sync")
            info = protect(pair, group, volume, size)
            wait_durable(pair.prod, group, timeout_s=3600.0)
            progress(f"{group}: writing {journal_bytes / 2**30:g} GiB ({args.bs} random)")
            fio = write_journal(info["nbd_uri"], size, journal_bytes, args.bs)
            wait_durable(pair.prod, group, timeout_s=3600.0)
            checkpoint = tag_checkpoint(pair, group)
            prepared[group] = {"volume_bytes": size, "fio": fio, "checkpoint": checkpoint,
                               "dr_status": pair.dr.group_status(group)}
        quiet = wait_for_quiet(args.max_load, args.quiet_timeout)
        startup = [cli_startup(pair.dr) for _ in range(3)]
        runs: list[dict[str, Any]] = []
        for number in range(args.runs):
            caches = "warm" if number % 2 == 0 else "cold"
            order = groups if number % 2 == 0 else list(reversed(groups))
            for group, _, size in order:
                run = failover_once(pair, group, caches)
                run["volume_bytes"] = size
                runs.append(run)
                progress(f"{group} ({caches}): user {run['user_rto_s']:.3f} s = cli "
                         f"{run['cli_s']:.3f} + read {sum(run['first_reads_s']):.3f}; "
                         f"product {run['product_rto_s']:.3f} s; load {run['load_average']}")
        throughput = None
        if read_bytes:
            throughput = read_throughput(pair, directory, read_bytes, journal_bytes, args.bs,
                                         args.read_rounds)
    summary = summarize(groups, runs, startup, prepared)
    document = {
        "benchmark": "rto", "started_at": started_at,
        "command": " ".join([".venv/bin/python", "bench/rto.py", *sys.argv[1:]]),
        "parameters": {"sizes_bytes": sizes, "journal_bytes": journal_bytes,
                       "block": args.bs, "runs": args.runs, "read_bytes": read_bytes,
                       "read_rounds": args.read_rounds, "history_s": HISTORY_S,
                       "checkpoint_interval_s": CHECKPOINT_INTERVAL_S},
        "machine": machine(), "load": quiet, "prepared": prepared,
        "cli_startup_s": startup, "runs": runs, "summary": summary,
        "read_throughput": throughput,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"rto-{started_at}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    report(document)
    print(f"results: {path}")
    return 0


def summarize(groups: list[tuple[str, str, int]], runs: list[dict[str, Any]],
              startup: list[float], prepared: dict[str, Any]) -> dict[str, Any]:
    per_group: dict[str, Any] = {}
    for group, _, size in groups:
        for caches in ("warm", "cold"):
            mine = [r for r in runs if r["group"] == group and r["caches"] == caches]
            if not mine:
                continue
            per_group[f"{group}/{caches}"] = {
                "volume_bytes": size, "caches": caches, "runs": len(mine),
                "journal_bytes": prepared[group]["dr_status"]["journal_bytes"],
                "journal_records": prepared[group]["dr_status"]["durable_seq"],
                "user_rto_median_s": statistics.median(r["user_rto_s"] for r in mine),
                "user_rto_max_s": max(r["user_rto_s"] for r in mine),
                "cli_median_s": statistics.median(r["cli_s"] for r in mine),
                "first_read_median_s": statistics.median(sum(r["first_reads_s"])
                                                         for r in mine),
                "product_rto_median_s": statistics.median(r["product_rto_s"] for r in mine),
                "load_averages": [r["load_average"] for r in mine],
            }
    worst = max((g["user_rto_median_s"] for g in per_group.values()), default=float("nan"))
    return {"groups": per_group, "cli_startup_median_s": statistics.median(startup),
            "target": {"what": f"failover test to every volume readable <= {TARGET_RTO_S:g} s "
                               "(median, as the user sees it), independent of volume size",
                       "worst_median_s": worst, "met": worst <= TARGET_RTO_S}}


def report(document: dict[str, Any]) -> None:
    summary = document["summary"]
    print(f"{'group/caches':<14} {'volume':>7} {'journal':>8} {'records':>8} {'runs':>4} "
          f"{'user RTO':>9} {'max':>7} {'cli':>7} {'read':>7} {'rto_s':>7}  load")
    for name, g in summary["groups"].items():
        print(f"{name:<14} {g['volume_bytes'] / 2**30:>5g}Gi "
              f"{g['journal_bytes'] / 2**30:>6.2f}Gi {g['journal_records']:>8} {g['runs']:>4} "
              f"{g['user_rto_median_s']:>9.3f} {g['user_rto_max_s']:>7.3f} "
              f"{g['cli_median_s']:>7.3f} {g['first_read_median_s']:>7.3f} "
              f"{g['product_rto_median_s']:>7.3f}  {g['load_averages']}")
    print(f"seawall --help alone (CLI start-up): {summary['cli_startup_median_s']:.3f} s")
    target = summary["target"]
    print(f"\ntarget: {target['what']}: worst median {target['worst_median_s']:.3f} s -> "
          f"{'MET' if target['met'] else 'NOT MET'}")
    throughput = document["read_throughput"]
    if throughput:
        medians = throughput["median_bytes_per_s"]
        print(f"\nsequential read, {throughput['size_bytes'] / 2**30:g} GiB, caches dropped: "
              f"image over NBD {medians['image'] / 1e6:.0f} MB/s, replica file "
              f"{medians['replica'] / 1e6:.0f} MB/s -> {throughput['ratio']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
