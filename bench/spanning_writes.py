"""Write latency of a group spanning two agents, against a one-agent group, on one machine.

Usage: ``.venv/bin/python bench/spanning_writes.py [--seconds 20] [--interval 1s] [--size 1G]``

What runs, in one invocation, on loopback and Unix sockets only:
- site ``prod`` (its agent with a control listener), site ``dr``, paired, and a second
  agent ``host2`` joined to prod as from another host (own directory, process and ports);
- reference: volume ``r`` on prod's agent, alone in group ``ref``; spanning: volume ``a``
  on prod's agent (the lead) and ``b`` on host2 (a member), one group ``app``. Both groups
  protect to dr with the same ``--interval`` and are measured once both are ``protecting``;
- fio (nbd engine) 4 KiB random writes at queue depth 1 (latency), then at queue depth 16
  (throughput), ``--seconds`` each after a 2 s ramp, one volume at a time (r, a, b at
  depth 1; b, a, r at depth 16, so no volume is always first), each volume over its
  agent's Unix socket. After each job the script waits until both groups' buffers drained.

What differs is only the group: ``app`` takes a coordinated checkpoint every interval (a
round over mutual-TLS HTTP from the lead to host2; each member holds write
acknowledgements from its marker until every member's marker is in), ``ref`` appends its
marker alone. Unfair, both ways: every process (three agents, two managers, fio) shares
the machine's cores, so a round also costs CPU that the other volume's job would have
had, and both groups' timers run during every job (``app``'s rounds during r's jobs too);
the "inter-agent" round trip is loopback, not a LAN, so a real LAN adds its latency to
every held write. Rounds during each job (``/api/v1/status/groups/app``, the document of
``seawall group status app --json``: ``agent.coordination``) and ref's checkpoints are
recorded, to show both groups were checkpointing.

Results: a table on stdout (latency percentiles of fio's ``clat_ns``) with ratios
spanning / reference, and a JSON file in ``bench/results/``. Every process and temporary
file is removed on exit, Ctrl-C included.
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

from common import FioJob, cpu_seconds, spawn, stop
from seawall.localsites import LocalSite, free_ports
from seawall.units import parse_duration_s, parse_size_bytes

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RAMP_S = 2.0
DRAIN_TIMEOUT_S = 300.0
JOBS = (FioJob("randwrite-4k-qd1", "randwrite", "4k", 1),
        FioJob("randwrite-4k-qd16", "randwrite", "4k", 16))
GROUP_OF = {"r": "ref", "a": "app", "b": "app"}
ROLE = {"r": "one agent", "a": "spanning, lead", "b": "spanning, member"}
PERCENTILES = {"p50_us": "50.000000", "p99_us": "99.000000", "p999_us": "99.900000"}
FIGURES = ("iops", "p50_us", "p99_us", "p999_us", "max_us")


class Host:
    """An agent of "another host": its own directory, ports and process (as in tests)."""

    def __init__(self, name: str, directory: Path, log_path: Path) -> None:
        self.name, self.directory, self.log_path = name, directory, log_path
        self.control, self.replication, self.nbd = free_ports(3)
        self.process: subprocess.Popen[bytes] | None = None

    def join(self, site: LocalSite) -> None:
        token = site.api.post("/api/v1/agents/token", {})["token"]
        self.process = spawn(
            [sys.executable, "-m", "seawall", "agent", "run", "--data", str(self.directory),
             "--manager", site.url, "--token", token, "--name", self.name,
             "--control", f"127.0.0.1:{self.control}",
             "--replication", f"127.0.0.1:{self.replication}",
             "--nbd-tcp", f"127.0.0.1:{self.nbd}"], self.log_path)
        deadline = time.monotonic() + 60.0
        while not any(a["name"] == self.name and a["reachable"]
                      for a in site.api.get("/api/v1/agents")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent {self.name} did not join (see {self.log_path})")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout_s=30.0)


@dataclass
class Run:
    job: str
    volume: str
    iops: float
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    mean_us: float
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
        self.prod = LocalSite("prod", workdir / "prod", log, agent_control=True)
        self.dr = LocalSite("dr", workdir / "dr", log)
        self.host2 = Host("host2", workdir / "host2", workdir / "host2.log")
        self.uris: dict[str, str] = {}

    def start(self) -> None:
        self.prod.launch()
        self.dr.launch()
        self.prod.wait_started()
        self.dr.wait_started()
        self.host2.join(self.prod)
        self.prod.pair_with(self.dr)
        for volume, agent in (("r", None), ("a", None), ("b", "host2")):
            self.uris[volume] = self.prod.api.post("/api/v1/volumes", {
                "name": volume, "size_bytes": self.size_bytes, "agent": agent})["nbd_uri"]
        for group, volumes in (("ref", ["r"]), ("app", ["a", "b"])):
            self.prod.api.post("/api/v1/groups", {"name": group, "volumes": volumes,
                                                  "to": "dr",
                                                  "checkpoint_interval_s": self.interval_s})
        for group in ("ref", "app"):
            self.prod.wait_protecting(group, timeout_s=600.0)

    def agent_pids(self) -> list[int]:
        pids = [_pid_file(site.config.run_dir / "agent.pid") for site in (self.prod, self.dr)]
        return [*pids, self.host2.process.pid if self.host2.process else 0]

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
        rounds_before = self.coordination()
        started_ns, started = time.time_ns(), time.monotonic()
        output = self.workdir / f"fio-{job.name}-{volume}.json"
        fio = job.argv(self.uris[volume], self.size_bytes, seconds, RAMP_S)
        write = _run_fio([*fio, "--percentile_list=50:99:99.9", f"--output={output}"],
                         output, self.workdir / "fio.log", seconds + RAMP_S + 120)
        wall_s = time.monotonic() - started
        cpu_s = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        rounds_after = self.coordination()
        ended_ns = time.time_ns()
        ref = [c for c in self.prod.api.get("/api/v1/groups/ref/checkpoints")
               if started_ns <= c["time_ns"] <= ended_ns]
        clat = write["clat_ns"]
        percentiles = clat.get("percentile", {})
        return Run(job.name, volume, float(write["iops"]),
                   *(float(percentiles.get(PERCENTILES[k], 0)) / 1000 for k in PERCENTILES),
                   max_us=float(clat["max"]) / 1000, mean_us=float(clat["mean"]) / 1000,
                   fio_errors=int(write.get("error", 0)), wall_s=wall_s,
                   agents_cores=cpu_s / wall_s,
                   rounds=rounds_after[0] - rounds_before[0],
                   failed_rounds=rounds_after[1] - rounds_before[1],
                   hold_timeouts=rounds_after[2] - rounds_before[2],
                   ref_checkpoints=len(ref), drain_s=self.wait_drained())

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
            self.host2.stop()
            for site in (self.prod, self.dr):
                site.stop()
        finally:
            for pid, data_dir in zip(pids, ("prod", "dr", "host2"), strict=True):
                _kill_leftover(pid, self.workdir / data_dir)


def _run_fio(argv: list[str], output: Path, log: Path, timeout_s: float) -> dict[str, Any]:
    """fio to completion (its JSON to ``output``); the job's ``write`` section."""
    process = spawn(argv, log)
    try:
        process.wait(timeout_s)
    finally:
        stop(process)
    text = output.read_text() if output.exists() else ""
    if process.returncode != 0 or "{" not in text:
        raise RuntimeError(f"fio failed ({process.returncode}); see {log}")
    document: dict[str, Any] = json.loads(text[text.index("{"):])
    write: dict[str, Any] = document["jobs"][0]["write"]
    write["error"] = document["jobs"][0].get("error", 0)
    return write


def _pid_file(path: Path) -> int:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return 0


def _kill_leftover(pid: int, data_dir: Path) -> None:
    """An agent that outlived its stop (own session, or a stop that failed): SIGKILL it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return
    if pid > 0 and "seawall" in cmdline and str(data_dir) in cmdline:  # not a recycled pid
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Per job: each volume's figures and the ratios a / r and b / r."""
    summary: dict[str, Any] = {}
    for job in JOBS:
        by_volume = {r.volume: asdict(r) for r in runs if r.job == job.name}
        summary[job.name] = {
            "volumes": by_volume,
            "ratios": {f"{v}/r": {k: by_volume[v][k] / by_volume["r"][k]
                                  if by_volume["r"][k] else None for k in FIGURES}
                       for v in ("a", "b")},
        }
    return summary


def print_table(summary: dict[str, Any], interval_s: float, out: TextIO) -> None:
    header = (f"{'job':<18} {'volume':<20} {'IOPS':>7} {'p50 us':>7} {'p99 us':>7} "
              f"{'p99.9 us':>8} {'max us':>8} {'rounds':>7} {'failed':>6} {'ref ckpts':>9} "
              f"{'cores':>5}")
    print(f"checkpoint interval {interval_s * 1000:g} ms", file=out)
    print(header, file=out)
    print("-" * len(header), file=out)
    for job in JOBS:
        for volume, r in summary[job.name]["volumes"].items():
            print(f"{job.name:<18} {volume + ' (' + ROLE[volume] + ')':<20} {r['iops']:>7.0f} "
                  f"{r['p50_us']:>7.0f} {r['p99_us']:>7.0f} {r['p999_us']:>8.0f} "
                  f"{r['max_us']:>8.0f} {r['rounds']:>7} {r['failed_rounds']:>6} "
                  f"{r['ref_checkpoints']:>9} {r['agents_cores']:>5.2f}", file=out)
        for name, ratios in summary[job.name]["ratios"].items():
            cells = [f"{ratios[k] or 0:>{w - 1}.2f}x"
                     for k, w in zip(FIGURES, (7, 7, 7, 8, 8), strict=True)]
            print(f"{'':<18} {'ratio ' + name:<20} {' '.join(cells)}", file=out)


def machine() -> dict[str, Any]:
    fio = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "")
    return {"cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "fio": fio, "loadavg": os.getloadavg()}


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
                _progress(f"starting prod, dr and agent host2 in {workdir}")
                bench.start()
                _progress("both groups protecting; measuring")
                for index, job in enumerate(JOBS):
                    for volume in ("r", "a", "b")[:: 1 if index % 2 == 0 else -1]:
                        run = bench.run(job, volume, args.seconds)
                        runs.append(run)
                        _progress(f"{job.name:<18} {volume} {run.iops:>7.0f} IOPS "
                                  f"p99 {run.p99_us:>6.0f} us, {run.rounds} rounds "
                                  f"({run.failed_rounds} failed)")
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
        "machine": {**machine(), "loadavg_before": load_before},
        "summary": summary,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    result_path = RESULTS_DIR / f"spanning_writes-{started_at}.json"
    result_path.write_text(json.dumps(document, indent=2) + "\n")
    print_table(summary, interval_s, sys.stdout)
    print(f"results: {result_path}")
    return 0


def _progress(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
