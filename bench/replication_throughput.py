"""End-to-end replication throughput of 1 MiB writes, against fio writing the same disk.

Usage: ``.venv/bin/python bench/replication_throughput.py [--size 2G] [--rounds 2]``

What is timed, in one invocation, alternating per round:
- **Seawall**: fio (nbd engine, 1 MiB sequential writes, queue depth 4, ``--size``
  bytes, fresh random data in every buffer) into a volume of a group protected from a
  real ``prod`` site to a real ``dr`` site on this machine (checkpoint every 1 s). The
  clock runs from fio's start until everything fio wrote is durable in the recovery
  journal: after fio ended, the group is ``protecting`` (no sync left) and its
  ``acked_seq`` (the recovery site's fsynced position) reached the ``last_seq`` of that
  moment. When the backlog reached 90 % of the group's buffer share the group overflowed
  to tracking and a bitmap sync shipped the rest: that is part of the time, and reported.
- **reference**: fio writing the same bytes the same way (1 MiB sequential, ``psync``,
  fresh random buffers) to a plain file in the same directory, ``--end_fsync=1`` so the
  data is durable when fio ends; the clock runs from fio's start to its end.

Both runs start with the page cache written back and dropped (when root). Seawall's rate is
``size / time``, as is the reference's; the ratio is the figure (target: >= 0.5x).

Results: a table on stdout and a JSON document in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from common import cpu_seconds, run_fio
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
    wait_for_quiet,
    wait_until,
    workdir,
)

TARGET_RATIO = 0.5
DRAIN_TIMEOUT_S = 1800.0
SAMPLE_INTERVAL_S = 0.25


@dataclass
class SeawallRun:
    round: int
    total_s: float
    fio_s: float
    drain_s: float
    fio_bytes_per_s: float
    e2e_bytes_per_s: float
    written_bytes: int
    overflows: int
    peak_buffered_bytes: int
    states_seen: list[str]
    sync_shipped_bytes: int
    recovery_durable_seq: int
    prod_agent_cpu_s: float
    dr_agent_cpu_s: float
    fio_cpu_s: float
    cpu: dict[str, float]


@dataclass
class ReferenceRun:
    round: int
    total_s: float
    bytes_per_s: float
    fio_bytes_per_s: float
    fio_cpu_s: float
    cpu: dict[str, float]


def fio_argv(name: str, size_bytes: int, target: list[str], iodepth: int) -> list[str]:
    return ["fio", f"--name={name}", *target, "--rw=write", "--bs=1M",
            f"--iodepth={iodepth}", f"--size={size_bytes}", "--numjobs=1",
            "--refill_buffers", "--output-format=json"]


def run_reference(pair: SitePair, size_bytes: int, round_index: int) -> ReferenceRun:
    path = pair.workdir / "reference.raw"
    argv = fio_argv("reference", size_bytes,
                    ["--ioengine=psync", f"--filename={path}", "--end_fsync=1"], 1)
    meter = CpuMeter()
    meter.start(pair.pids())  # the idle sites' CPU is ours too
    started = time.monotonic()
    result = run_fio(argv, timeout_s=DRAIN_TIMEOUT_S)
    total_s = time.monotonic() - started
    return ReferenceRun(round_index, total_s, size_bytes / total_s, result.bytes_per_s,
                        result.fio_cpu_percent / 100 * total_s, meter.stop())


def run_seawall(pair: SitePair, uri: str, size_bytes: int, iodepth: int,
                round_index: int) -> SeawallRun:
    prod, dr = pair.prod, pair.dr
    before = prod.group_status(GROUP)
    prod_pid, dr_pid = agent_pid(prod), agent_pid(dr)
    meter = CpuMeter()
    meter.start(pair.pids())
    prod_cpu_before, dr_cpu_before = cpu_seconds(prod_pid), cpu_seconds(dr_pid)
    sampler = StatusSampler(prod, SAMPLE_INTERVAL_S).start()
    started = time.monotonic()
    result = run_fio(fio_argv("seawall", size_bytes, ["--ioengine=nbd", f"--uri={uri}"],
                              iodepth), timeout_s=DRAIN_TIMEOUT_S)
    fio_s = time.monotonic() - started

    target_seq = 0

    def drained() -> bool:
        nonlocal target_seq
        status = prod.group_status(GROUP)
        if status["state"] != "protecting":
            return False
        if not target_seq:  # the first protecting sample after fio: everything is in it
            target_seq = status["last_seq"]
        return int(status["acked_seq"]) >= target_seq

    wait_until("replication drained", drained, DRAIN_TIMEOUT_S, poll_s=0.02)
    total_s = time.monotonic() - started
    samples = sampler.stop()
    after = prod.group_status(GROUP)
    cpu = meter.stop()
    prod_cpu_s = cpu_seconds(prod_pid) - prod_cpu_before
    dr_cpu_s = cpu_seconds(dr_pid) - dr_cpu_before
    states: list[str] = []
    for _, status in samples:
        if not states or states[-1] != status["state"]:
            states.append(status["state"])
    overflows = after["overflows"] - before["overflows"]
    return SeawallRun(
        round=round_index, total_s=total_s, fio_s=fio_s, drain_s=total_s - fio_s,
        fio_bytes_per_s=result.bytes_per_s, e2e_bytes_per_s=size_bytes / total_s,
        written_bytes=after["written_bytes"] - before["written_bytes"],
        overflows=overflows,
        peak_buffered_bytes=max((s["buffered_bytes"] for _, s in samples), default=0),
        states_seen=states,
        sync_shipped_bytes=int(after["sync"]["shipped_bytes"]) if overflows else 0,
        recovery_durable_seq=int(dr.group_status(GROUP)["durable_seq"]),
        prod_agent_cpu_s=prod_cpu_s, dr_agent_cpu_s=dr_cpu_s,
        fio_cpu_s=result.fio_cpu_percent / 100 * fio_s, cpu=cpu,
    )


def summarize(seawall: list[SeawallRun], reference: list[ReferenceRun]) -> dict[str, Any]:
    ours = statistics.median(r.e2e_bytes_per_s for r in seawall)
    theirs = statistics.median(r.bytes_per_s for r in reference)
    ratio = ours / theirs
    return {
        "seawall_e2e_bytes_per_s": ours,
        "reference_bytes_per_s": theirs,
        "ratio": ratio,
        "target": {"what": "end-to-end replication of 1 MiB writes >= 0.5x fio sequential "
                           "write to the same disk", "ratio": ratio,
                   "met": ratio >= TARGET_RATIO},
        "overflowed": any(r.overflows for r in seawall),
        "max_other_cores": max([r.cpu["other_cores"] for r in seawall]
                               + [r.cpu["other_cores"] for r in reference]),
    }


def gib(run: ReferenceRun) -> float:
    return run.bytes_per_s * run.total_s / 2**30


def print_table(summary: dict[str, Any], seawall: list[SeawallRun],
                reference: list[ReferenceRun]) -> None:
    mb = 1e6
    print(f"{'run':<14} {'total s':>8} {'MB/s':>8} {'fio s':>7} {'fio MB/s':>9} "
          f"{'drain s':>8} {'overflows':>9} {'peak buf MiB':>12} {'other cores':>11}")
    for ref in reference:
        print(f"{'reference r' + str(ref.round):<14} {ref.total_s:>8.2f} "
              f"{ref.bytes_per_s / mb:>8.1f} {ref.total_s:>7.2f} "
              f"{ref.fio_bytes_per_s / mb:>9.1f} {'':>8} {'':>9} {'':>12} "
              f"{ref.cpu['other_cores']:>11.2f}")
    for run in seawall:
        print(f"{'seawall r' + str(run.round):<14} {run.total_s:>8.2f} "
              f"{run.e2e_bytes_per_s / mb:>8.1f} {run.fio_s:>7.2f} "
              f"{run.fio_bytes_per_s / mb:>9.1f} {run.drain_s:>8.2f} {run.overflows:>9} "
              f"{run.peak_buffered_bytes / 2**20:>12.1f} {run.cpu['other_cores']:>11.2f}")
    print("\nCPU seconds per GiB written (fio's own: usr+sys it reports)")
    for ref in reference:
        print(f"reference r{ref.round}: fio {ref.fio_cpu_s / gib(ref):.2f}")
    for run in seawall:
        per_gib = run.written_bytes / 2**30
        print(f"seawall r{run.round}: fio {run.fio_cpu_s / per_gib:.2f}, protected agent "
              f"{run.prod_agent_cpu_s / per_gib:.2f}, recovery agent "
              f"{run.dr_agent_cpu_s / per_gib:.2f}; states {' -> '.join(run.states_seen)}; "
              f"sync shipped {run.sync_shipped_bytes / 2**20:.0f} MiB")
    target = summary["target"]
    print(f"\ntarget: {target['what']}: {target['ratio']:.2f}x -> "
          f"{'MET' if target['met'] else 'NOT MET'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="2G", help="bytes fio writes per run (default 2G)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (medians reported)")
    parser.add_argument("--iodepth", type=int, default=4, help="fio queue depth into NBD")
    parser.add_argument("--buffer", default="512M",
                        help="each agent's buffer for unsent writes (the product default)")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="wait for a 1-minute load average below this before measuring")
    parser.add_argument("--quiet-timeout", type=float, default=900.0,
                        help="give up waiting for a quiet machine after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    size_bytes = parse_size_bytes(args.size)
    buffer_bytes = parse_size_bytes(args.buffer)
    if shutil.which("fio") is None:
        print("fio is not installed (make setup installs it)", file=sys.stderr)
        return 2

    started_at = time.strftime("%Y%m%d-%H%M%S")
    quiet = wait_for_quiet(args.max_load, args.quiet_timeout)
    seawall: list[SeawallRun] = []
    reference: list[ReferenceRun] = []
    caches_dropped = True
    with workdir("seawall-e2e-", args.keep) as directory, \
            (directory / "sites.log").open("w") as log, \
            SitePair(directory, log, buffer_bytes=buffer_bytes) as pair:
        volume = pair.prod.api.post("/api/v1/volumes", {"name": VOLUME,
                                                        "size_bytes": size_bytes})
        pair.prod.api.post("/api/v1/groups", {"name": GROUP, "volumes": [VOLUME], "to": "dr",
                                              "checkpoint_interval_s": 1.0})
        pair.prod.wait_protecting(GROUP, timeout_s=DRAIN_TIMEOUT_S)
        progress(f"group protecting; writing {args.size} per run in {directory}")
        for round_index in range(args.rounds):
            order = ("reference", "seawall") if round_index % 2 == 0 else ("seawall", "reference")
            for what in order:
                caches_dropped &= drop_caches()
                if what == "reference":
                    ref = run_reference(pair, size_bytes, round_index)
                    reference.append(ref)
                    progress(f"round {round_index + 1} reference {ref.bytes_per_s / 1e6:.1f} "
                             f"MB/s ({ref.total_s:.1f} s)")
                else:
                    run = run_seawall(pair, volume["nbd_uri"], size_bytes, args.iodepth,
                                      round_index)
                    seawall.append(run)
                    progress(f"round {round_index + 1} seawall {run.e2e_bytes_per_s / 1e6:.1f} "
                             f"MB/s end to end ({run.total_s:.1f} s, fio {run.fio_s:.1f} s, "
                             f"{run.overflows} overflows)")

    summary = summarize(seawall, reference)
    document = {
        "benchmark": "replication_throughput",
        "started_at": started_at,
        "command": " ".join([".venv/bin/python", "bench/replication_throughput.py",
                             *sys.argv[1:]]),
        "parameters": {"size_bytes": size_bytes, "rounds": args.rounds,
                       "iodepth": args.iodepth, "buffer_bytes": buffer_bytes,
                       "checkpoint_interval_s": 1.0, "caches_dropped": caches_dropped},
        "machine": machine(),
        "load": quiet,
        "summary": summary,
        "seawall": [asdict(r) for r in seawall],
        "reference": [asdict(r) for r in reference],
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"replication_throughput-{started_at}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print_table(summary, seawall, reference)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
