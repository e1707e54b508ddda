"""Write latency of a group spanning two agents, against a one-agent group, on one machine.

Usage: ``.venv/bin/python bench/spanning_writes.py [--seconds 20] [--interval 1s] [--size 1G]``

What runs, on loopback and Unix sockets only: sites ``prod`` (agent with a control
listener) and ``dr``, paired, and agent ``host2`` joined to prod as from another host. Group
``ref``: volume ``r`` on prod's agent alone; group ``app``: ``a`` on prod's agent (the lead)
and ``b`` on host2 (a member). Both protect to dr with the same ``--interval`` and are
``protecting`` before any job. fio (nbd engine, each volume over its agent's Unix socket):
4 KiB random writes at queue depth 1 (latency), then 16 (throughput), ``--seconds`` each
after a 2 s ramp, one volume at a time (r, a, b; then b, a, r), then a wait until both
groups drained to dr.

Only the group differs: ``app`` takes a coordinated checkpoint each interval (mutual-TLS
HTTP calls from the lead to host2; each member holds write acknowledgements from its marker
until every member's marker is in), ``ref`` appends its marker alone. Unfair, both ways: all
processes (three agents, two managers, fio) share the cores and both groups' timers run
during every job (``app``'s rounds cost CPU during r's jobs too); the inter-agent trip is
loopback, where a real LAN adds its round trip to every held write. Each job's rounds
(``agent.coordination`` of ``seawall group status app --json``) and ref's checkpoints are
counted, to show both groups were checkpointing.

Latency is fio's ``lat_ns`` (submission to completion, what the writer waits; with the nbd
engine ``clat_ns`` alone, kept in the JSON, can show a p50 of a few microseconds). A round
holds few writes (one at depth 1), which p99.9 barely sees: writes of 2 ms or more are
counted from fio's per-write log, and at depth 1 those beyond r's given per round. Results: a table
with ratios spanning / reference, and a JSON file in ``bench/results/``. Every process and
temporary file is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from common import FioJob, cpu_seconds, spawn
from seawall.localsites import LocalSite, free_ports, stop_process
from seawall.units import parse_duration_s, parse_size_bytes

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RAMP_S = 2.0
DRAIN_TIMEOUT_S = 300.0
SLOW_US = 2000  # a write is "slow" from this latency on (fio's per-write log)
JOBS = (FioJob("randwrite-4k-qd1", "randwrite", "4k", 1),
        FioJob("randwrite-4k-qd16", "randwrite", "4k", 16))
ROLE = {"r": "one agent", "a": "spanning, lead", "b": "spanning, member"}
PERCENTILES = {"p50_us": "50.000000", "p99_us": "99.000000", "p999_us": "99.900000",
               "p9999_us": "99.990000"}
FIGURES = ("iops", *PERCENTILES, "max_us", "slow_writes")
WIDTHS = (7, 7, 7, 8, 9, 8, 7)


@dataclass
class Run:
    job: str
    volume: str
    iops: float
    lat: dict[str, float]  # fio's lat_ns in us: p50_us ... p9999_us, max_us, mean_us
    clat: dict[str, float]  # the same of clat_ns (completion alone)
    slow_writes: int  # writes of SLOW_US or more
    fio_errors: int
    wall_s: float
    agents_cores: float  # prod + host2 + dr agents' CPU time / wall time
    rounds: int  # coordinated rounds of app during the job
    failed_rounds: int
    hold_timeouts: int  # members' holds that ran out (lead's + host2's)
    ref_checkpoints: int  # checkpoints of ref taken during the job
    drain_s: float


class Bench:
    def __init__(self, workdir: Path, size_bytes: int, interval_s: float, log: TextIO) -> None:
        self.workdir, self.size_bytes, self.interval_s = workdir, size_bytes, interval_s
        self.prod = LocalSite("prod", workdir / "prod", log)
        self.dr = LocalSite("dr", workdir / "dr", log)
        self.host2: subprocess.Popen[bytes] | None = None
        self.uris: dict[str, str] = {}

    def start(self) -> None:
        for site in (self.prod, self.dr):
            site.launch()
        for site in (self.prod, self.dr):
            site.wait_started()
        self.join_host2()
        self.prod.pair_with(self.dr)
        for volume, agent in (("r", None), ("a", None), ("b", "host2")):
            self.uris[volume] = self.prod.api.post("/api/v1/volumes", {
                "name": volume, "size_bytes": self.size_bytes, "agent": agent})["nbd_uri"]
        for group, volumes in (("ref", ["r"]), ("app", ["a", "b"])):
            self.prod.api.post("/api/v1/groups", {"name": group, "volumes": volumes, "to": "dr",
                                                  "checkpoint_interval_s": self.interval_s})
        for group in ("ref", "app"):
            self.prod.wait_protecting(group, timeout_s=600.0)

    def join_host2(self) -> None:
        """Agent host2 joins prod, as from another host (as tests/support/hosts.py does)."""
        token = self.prod.api.post("/api/v1/agents/token", {})["token"]
        control, replication, nbd = free_ports(3)
        self.host2 = spawn(
            [sys.executable, "-m", "seawall", "agent", "run", "--data",
             str(self.workdir / "host2"), "--manager", self.prod.url, "--token", token,
             "--name", "host2", "--control", f"127.0.0.1:{control}",
             "--replication", f"127.0.0.1:{replication}", "--nbd-tcp", f"127.0.0.1:{nbd}"],
            self.workdir / "host2.log")
        deadline = time.monotonic() + 60.0
        while not any(a["name"] == "host2" and a["reachable"]
                      for a in self.prod.api.get("/api/v1/agents")):
            if self.host2.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent host2 did not join (see {self.workdir})")
            time.sleep(0.1)

    def agent_pids(self) -> list[int]:
        pid_files = [site.config.run_dir / "agent.pid" for site in (self.prod, self.dr)]
        pids = [int(p.read_text()) if p.exists() else 0 for p in pid_files]
        return [*pids, self.host2.pid if self.host2 else 0]

    def coordination(self) -> tuple[int, int, int]:
        """app's rounds, failed rounds and hold timeouts (lead's and member's) so far."""
        agent = self.prod.api.get("/api/v1/status/groups/app")["agent"]
        holds = sum((m.get("coordination") or {}).get("hold_timeouts", 0)
                    for m in agent["members"])
        return agent["coordination"]["rounds"], agent["coordination"]["failed_rounds"], holds

    def run(self, job: FioJob, volume: str, seconds: float) -> Run:
        for group in ("ref", "app"):
            self.prod.wait_protecting(group)
        pids = self.agent_pids()
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        before = self.coordination()
        started_ns, started = time.time_ns(), time.monotonic()
        write, slow = _run_fio(job.argv(self.uris[volume], self.size_bytes, seconds, RAMP_S),
                               self.workdir / f"fio-{job.name}-{volume}",
                               seconds + RAMP_S + 120)
        wall_s = time.monotonic() - started
        cpu_s = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        after, ended_ns = self.coordination(), time.time_ns()
        ref = [c for c in self.prod.api.get("/api/v1/groups/ref/checkpoints")
               if started_ns <= c["time_ns"] <= ended_ns]
        rounds, failed, holds = (a - b for a, b in zip(after, before, strict=True))
        return Run(job.name, volume, float(write["iops"]), _latency_us(write["lat_ns"]),
                   _latency_us(write["clat_ns"]), slow, int(write["error"]), wall_s,
                   cpu_s / wall_s, rounds, failed, holds, len(ref), self.wait_drained())

    def wait_drained(self) -> float:
        """Seconds until neither group has anything left to ship to dr."""
        started = time.monotonic()
        while time.monotonic() - started < DRAIN_TIMEOUT_S:
            if all(self.prod.group_status(g)["buffered_bytes"] == 0 for g in ("ref", "app")):
                return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError(f"replication did not drain in {DRAIN_TIMEOUT_S:.0f} s")

    def close(self) -> None:
        pids = self.agent_pids()
        try:
            if self.host2 is not None:
                stop_process(self.host2, 30.0)
            for site in (self.prod, self.dr):
                site.stop()
        finally:
            for pid, data_dir in zip(pids, ("prod", "dr", "host2"), strict=True):
                _kill_leftover(pid, self.workdir / data_dir)


def _run_fio(argv: list[str], prefix: Path, timeout_s: float) -> tuple[dict[str, Any], int]:
    """fio to completion: its job's ``write`` section (with ``error``) and its slow writes
    (from the per-write latency log, removed after)."""
    output = prefix.with_suffix(".json")
    process = spawn([*argv, "--lat_percentiles=1", "--percentile_list=50:99:99.9:99.99",
                     f"--output={output}", f"--write_lat_log={prefix}", "--log_avg_msec=0"],
                    prefix.with_suffix(".log"))
    try:
        process.wait(timeout_s)
    finally:
        stop_process(process, 10.0)
    text = output.read_text() if output.exists() else ""
    if process.returncode != 0 or "{" not in text:
        raise RuntimeError(f"fio failed ({process.returncode}); see {prefix}.log")
    job = json.loads(text[text.index("{"):])["jobs"][0]
    with Path(f"{prefix}_lat.1.log").open() as log:  # "msec, lat_ns, ddir, bs, offset"
        slow = sum(1 for line in log if int(line.split(",", 2)[1]) >= SLOW_US * 1000)
    for path in prefix.parent.glob(f"{prefix.name}_*lat.*.log"):
        path.unlink()
    return {**job["write"], "error": job.get("error", 0)}, slow


def _latency_us(section: dict[str, Any]) -> dict[str, float]:
    percentiles = section.get("percentile", {})
    return {**{k: float(percentiles.get(v, 0)) / 1000 for k, v in PERCENTILES.items()},
            "max_us": float(section["max"]) / 1000, "mean_us": float(section["mean"]) / 1000}


def _kill_leftover(pid: int, data_dir: Path) -> None:
    """An agent that outlived its site's stop (it runs in its own session; its ``site run``
    may have died of the Ctrl-C): SIGTERM, then SIGKILL after 30 s."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return
    if pid > 0 and "seawall" in cmdline and str(data_dir) in cmdline:  # not a recycled pid
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Per job: each volume's figures, the ratios a / r and b / r, and the slow writes a
    and b had beyond r's, per round (at depth 1 a round can hold one write)."""
    summary: dict[str, Any] = {}
    for job in JOBS:
        by_volume = {r.volume: asdict(r) for r in runs if r.job == job.name}
        figures = {v: {"iops": r["iops"], **r["lat"], "slow_writes": r["slow_writes"]}
                   for v, r in by_volume.items()}
        summary[job.name] = {
            "volumes": by_volume,
            "ratios": {f"{v}/r": {k: figures[v][k] / figures["r"][k] if figures["r"][k]
                                  else None for k in FIGURES} for v in ("a", "b")},
            "extra_slow_writes_per_round": {
                v: (figures[v]["slow_writes"] - figures["r"]["slow_writes"])
                / max(1, by_volume[v]["rounds"]) for v in ("a", "b")},
        }
    return summary


def print_table(summary: dict[str, Any], interval_s: float, out: TextIO) -> None:
    header = (f"{'job':<18} {'volume':<20} {'IOPS':>7} {'p50 us':>7} {'p99 us':>7} "
              f"{'p99.9 us':>8} {'p99.99 us':>9} {'max us':>8} {'>=2 ms':>7} {'rounds':>6} "
              f"{'failed':>6} {'ref ckpts':>9} {'cores':>5}")
    print(f"checkpoint interval {interval_s * 1000:g} ms; latency: fio lat (submission to "
          f"completion); >=2 ms: writes of 2 ms or more", file=out)
    print(header, file=out)
    print("-" * len(header), file=out)
    for job in JOBS:
        for volume, r in summary[job.name]["volumes"].items():
            cells = [f"{r['iops']:>7.0f}", *(f"{r['lat'][k]:>{w}.0f}" for k, w in
                                             zip(FIGURES[1:-1], WIDTHS[1:-1], strict=True))]
            print(f"{job.name:<18} {volume + ' (' + ROLE[volume] + ')':<20} {' '.join(cells)} "
                  f"{r['slow_writes']:>7} {r['rounds']:>6} {r['failed_rounds']:>6} "
                  f"{r['ref_checkpoints']:>9} {r['agents_cores']:>5.2f}", file=out)
        for name, ratios in summary[job.name]["ratios"].items():
            cells = [f"{ratios[k] or 0:>{w - 1}.2f}x"
                     for k, w in zip(FIGURES, WIDTHS, strict=True)]
            extra = summary[job.name]["extra_slow_writes_per_round"][name[0]]
            per_round = f"  ({extra:+.1f} per round)" if job.iodepth == 1 else ""
            print(f"{'':<18} {'ratio ' + name:<20} {' '.join(cells)}{per_round}", file=out)


def machine() -> dict[str, Any]:
    fio = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "kernel": platform.release(), "fio": fio,
            "python": platform.python_version(), "loadavg_after": os.getloadavg()}


def _say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured seconds per fio job and volume (after a 2 s ramp)")
    parser.add_argument("--interval", default="1s",
                        help="checkpoint interval of both groups (default 1s; 100ms to 1h)")
    parser.add_argument("--size", default="1G", help="size of each volume (default 1G)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    size_bytes, interval_s = parse_size_bytes(args.size), parse_duration_s(args.interval)
    if shutil.which("fio") is None:
        print("fio is not installed (make setup installs it)", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="seawall-bench-"))
    started_at = time.strftime("%Y%m%d-%H%M%S")
    load_before = os.getloadavg()
    runs: list[Run] = []
    try:
        with (workdir / "sites.log").open("w") as log:
            bench = Bench(workdir, size_bytes, interval_s, log)
            try:
                _say(f"starting prod, dr and agent host2 in {workdir}")
                bench.start()
                _say("both groups protecting; measuring")
                for index, job in enumerate(JOBS):
                    for volume in ("r", "a", "b")[:: 1 if index % 2 == 0 else -1]:
                        runs.append(run := bench.run(job, volume, args.seconds))
                        _say(f"{job.name:<18} {volume} {run.iops:>7.0f} IOPS, "
                                  f"{run.rounds} rounds ({run.failed_rounds} failed)")
            finally:
                bench.close()
    except KeyboardInterrupt:
        print("interrupted; everything stopped and removed", file=sys.stderr)
        return 130
    except Exception:
        print(f"benchmark failed; logs were in {workdir}", file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(runs)
    document = {
        "benchmark": "spanning_writes", "started_at": started_at,
        "command": " ".join([".venv/bin/python", "bench/spanning_writes.py", *sys.argv[1:]]),
        "parameters": {"seconds": args.seconds, "ramp_s": RAMP_S, "size_bytes": size_bytes,
                       "checkpoint_interval_s": interval_s,
                       "jobs": [asdict(job) for job in JOBS]},
        "machine": {**machine(), "loadavg_before": load_before},  # 1, 5, 15 min
        "summary": summary,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    result_path = RESULTS_DIR / f"spanning_writes-{started_at}.json"
    result_path.write_text(json.dumps(document, indent=2) + "\n")
    print_table(summary, interval_s, sys.stdout)
    print(f"results: {result_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
