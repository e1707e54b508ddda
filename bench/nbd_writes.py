"""NBD write throughput of a protected Seawall volume, against qemu-nbd and nbdkit.

Usage: ``.venv/bin/python bench/nbd_writes.py [--seconds 15] [--size 1G] [--rounds 1]``

What runs, in one invocation, on loopback and Unix sockets only:
- two real sites (``LocalSite``: manager + agent each), paired; a volume of ``--size`` at
  the protected site, protected by a group to the recovery site (checkpoint every 1 s),
  measured only once the group is ``protecting`` (initial sync done, replication running);
- ``qemu-nbd`` and ``nbdkit file`` each serving a sparse raw file of the same size in the
  same temporary directory (same file system as the Seawall volume);
- the same fio jobs (nbd engine) against all three, one after the other per job:
  4 KiB random writes at queue depth 16, then 1 MiB sequential writes at queue depth 4.

Fairness: every server writes into the page cache and makes data durable on FLUSH/FUA
(Seawall: ``pwrite`` + ``fdatasync`` on FLUSH; qemu-nbd ``--cache=writeback --aio=threads``;
nbdkit's file plugin defaults). fio sends no FLUSH, so no server pays for durability here.
Seawall additionally captures every write into its replication stream, which is shipped
(zstd) to the recovery site agent on the same 2-core machine; that site's journal fsyncs
are part of the price.

After each Seawall job the script waits until the recovery site acknowledged everything
written (``acked_seq`` reaches the ``last_seq`` seen when fio ended) and reports that
drain time with the peak buffer and RPO sampled during the job. A guard interrupts a
Seawall job if the protected buffer exceeds ``--max-buffer`` (the buffer is RAM).

Results: a table on stdout (or the JSON with ``--json``) and a JSON file in
``bench/results/``. Every process and temporary file is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from common import FioJob, FioResult, cpu_seconds, run_fio, spawn, wait_for_socket
from seawall.localsites import LocalSite, stop_process
from seawall.units import parse_size_bytes

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RAMP_S = 2.0
DRAIN_TIMEOUT_S = 600.0
JOBS = (
    FioJob("randwrite-4k-qd16", "randwrite", "4k", 16),
    FioJob("write-1m-qd4", "write", "1M", 4),
)
TARGETS = ("qemu-nbd", "nbdkit", "seawall")
QEMU_NBD_IOPS_TARGET_RATIO = 1.0


@dataclass
class Run:
    job: str
    target: str
    round: int
    fio: FioResult
    server_cpu_s: float
    wall_s: float
    replication: dict[str, Any] | None = None

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.wall_s if self.wall_s else 0.0


@dataclass
class Replication:
    """What the protected site's group status showed during and after one Seawall job."""

    max_buffered_bytes: int = 0
    max_rpo_s: float = 0.0
    samples: int = 0
    guard_tripped: bool = False
    written_bytes: int = 0
    last_seq_at_end: int = 0
    drain_s: float = 0.0
    recovery_cpu_s: float = 0.0
    status_after: dict[str, Any] = field(default_factory=dict)


class Servers:
    """The three targets, each with an NBD URI and the pids whose CPU time we account."""

    def __init__(self, workdir: Path, size_bytes: int, log: TextIO) -> None:
        self.workdir = workdir
        self.size_bytes = size_bytes
        self.log = log
        self.log_path = workdir / "servers.log"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.sites: list[LocalSite] = []
        self.uris: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.recovery_agent_pid = 0
        self.prod: LocalSite | None = None

    def _raw_file(self, name: str) -> Path:
        path = self.workdir / name
        with path.open("xb") as handle:
            handle.truncate(self.size_bytes)
        return path

    def start_qemu_nbd(self) -> None:
        socket = self.workdir / "qemu-nbd.sock"
        image = self._raw_file("qemu-nbd.raw")
        process = spawn(["qemu-nbd", "-t", "-k", str(socket), "-f", "raw", "-e", "4",
                         "--cache=writeback", "--aio=threads", str(image)], self.log_path)
        self.processes.append(process)
        wait_for_socket(socket, process)
        self.uris["qemu-nbd"] = f"nbd+unix:///?socket={socket}"
        self.pids["qemu-nbd"] = process.pid

    def start_nbdkit(self) -> None:
        socket = self.workdir / "nbdkit.sock"
        image = self._raw_file("nbdkit.raw")
        process = spawn(["nbdkit", "-f", "--exit-with-parent", "-U", str(socket),
                         "file", str(image)], self.log_path)
        self.processes.append(process)
        wait_for_socket(socket, process)
        self.uris["nbdkit"] = f"nbd+unix:///?socket={socket}"
        self.pids["nbdkit"] = process.pid

    def start_seawall(self) -> None:
        prod = LocalSite("prod", self.workdir / "prod", self.log)
        dr = LocalSite("dr", self.workdir / "dr", self.log)
        self.sites += [prod, dr]
        for site in self.sites:
            site.start()
        prod.pair_with(dr)
        volume = prod.api.post("/api/v1/volumes", {"name": "bench0",
                                                   "size_bytes": self.size_bytes})
        prod.api.post("/api/v1/groups", {"name": "bench", "volumes": ["bench0"], "to": "dr",
                                         "checkpoint_interval_s": 1.0})
        prod.wait_protecting("bench", timeout_s=600.0)
        self.prod = prod
        self.uris["seawall"] = volume["nbd_uri"]
        self.pids["seawall"] = _agent_pid(prod)
        self.recovery_agent_pid = _agent_pid(dr)

    def close(self) -> None:
        for site in self.sites:
            agent_pid = _agent_pid(site)
            try:
                site.stop()
            finally:
                _kill_leftover_agent(agent_pid, site.directory)
        for process in self.processes:
            stop_process(process, 10.0)


def _agent_pid(site: LocalSite) -> int:
    try:
        return int((site.config.run_dir / "agent.pid").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def _kill_leftover_agent(pid: int, data_dir: Path) -> None:
    """The agent runs in its own session; if stopping its site left it running, kill it."""
    if pid <= 0:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return
    if "seawall" in cmdline and str(data_dir) in cmdline:  # not a recycled pid
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def start_profilers(servers: Servers, job: FioJob, seconds: float,
                    prefix: str) -> list[subprocess.Popen[bytes]]:
    """py-spy on both agents for the measured part of a Seawall job (``--profile``)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    profilers = []
    for role, pid in (("prod", servers.pids["seawall"]), ("dr", servers.recovery_agent_pid)):
        output = RESULTS_DIR / f"{prefix}-{job.name}-{role}.txt"
        profilers.append(spawn([py_spy, "record", "--pid", str(pid), "--nonblocking",
                                "--rate", "200", "--format", "raw", "--threads",
                                "--duration", str(int(seconds)), "-o", str(output)],
                               servers.workdir / "py-spy.log"))
    return profilers


def run_one(servers: Servers, job: FioJob, target: str, round_index: int, seconds: float,
            max_buffer_bytes: int, profile_prefix: str | None = None) -> Run:
    uri = servers.uris[target]
    argv = job.argv(uri, servers.size_bytes, seconds, RAMP_S)
    replication = Replication() if target == "seawall" else None
    prod = servers.prod

    def sample() -> bool:
        if replication is None or prod is None:
            return False
        status = prod.group_status("bench")
        replication.samples += 1
        replication.max_buffered_bytes = max(replication.max_buffered_bytes,
                                             status["buffered_bytes"])
        replication.max_rpo_s = max(replication.max_rpo_s, status.get("rpo_s") or 0.0)
        if status["buffered_bytes"] > max_buffer_bytes:
            replication.guard_tripped = True
            return True
        return False

    before_status = prod.group_status("bench") if replication and prod else {}
    pid = servers.pids[target]
    cpu_before = cpu_seconds(pid)
    recovery_cpu_before = cpu_seconds(servers.recovery_agent_pid) if replication else 0.0
    started = time.monotonic()
    profilers: list[subprocess.Popen[bytes]] = []
    if profile_prefix is not None and target == "seawall":
        profilers = start_profilers(servers, job, seconds, profile_prefix)
    try:
        result = run_fio(argv, timeout_s=seconds + RAMP_S + 120, while_running=sample)
    finally:
        for profiler in profilers:
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                stop_process(profiler, 10.0)
    wall_s = time.monotonic() - started
    cpu_s = cpu_seconds(pid) - cpu_before
    if replication is not None and prod is not None:
        end_status = prod.group_status("bench")
        replication.last_seq_at_end = end_status["last_seq"]
        replication.written_bytes = end_status["written_bytes"] - before_status["written_bytes"]
        replication.drain_s = _wait_drained(prod, end_status["last_seq"])
        replication.recovery_cpu_s = cpu_seconds(servers.recovery_agent_pid) - recovery_cpu_before
        replication.status_after = prod.group_status("bench")
    return Run(job.name, target, round_index, result, cpu_s, wall_s,
               asdict(replication) if replication else None)


def _wait_drained(prod: LocalSite, last_seq: int) -> float:
    """Seconds until the recovery site acknowledged every record up to ``last_seq``."""
    started = time.monotonic()
    while time.monotonic() - started < DRAIN_TIMEOUT_S:
        if prod.group_status("bench")["acked_seq"] >= last_seq:
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"replication did not drain in {DRAIN_TIMEOUT_S:.0f} s")


def _median(runs: list[Run], job: str, target: str, attr: str) -> float:
    values = [getattr(r.fio, attr) for r in runs if r.job == job and r.target == target]
    return statistics.median(values) if values else 0.0


def summarize(runs: list[Run]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for job in JOBS:
        per_target = {
            target: {
                "iops": _median(runs, job.name, target, "iops"),
                "bytes_per_s": _median(runs, job.name, target, "bytes_per_s"),
                "clat_p50_us": _median(runs, job.name, target, "clat_p50_us"),
                "clat_p99_us": _median(runs, job.name, target, "clat_p99_us"),
                "server_cores": statistics.median(
                    [r.server_cores for r in runs if r.job == job.name and r.target == target]
                ),
            }
            for target in TARGETS
        }
        ours = per_target["seawall"]["iops"]
        summary[job.name] = {
            "targets": per_target,
            "ratio_vs_qemu_nbd": ours / per_target["qemu-nbd"]["iops"],
            "ratio_vs_nbdkit": ours / per_target["nbdkit"]["iops"],
        }
    random_ratio = summary[JOBS[0].name]["ratio_vs_qemu_nbd"]
    summary["target"] = {
        "what": "seawall IOPS >= 1.0x qemu-nbd on 4 KiB random writes, replication on",
        "ratio": random_ratio,
        "met": random_ratio >= QEMU_NBD_IOPS_TARGET_RATIO,
    }
    return summary


def print_table(summary: dict[str, Any], runs: list[Run], out: TextIO) -> None:
    header = (f"{'job':<18} {'target':<9} {'IOPS':>9} {'MB/s':>8} {'p50 us':>8} "
              f"{'p99 us':>9} {'srv cores':>9}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for job in JOBS:
        for target, figures in summary[job.name]["targets"].items():
            print(f"{job.name:<18} {target:<9} {figures['iops']:>9.0f} "
                  f"{figures['bytes_per_s'] / 1e6:>8.1f} {figures['clat_p50_us']:>8.0f} "
                  f"{figures['clat_p99_us']:>9.0f} {figures['server_cores']:>9.2f}", file=out)
        print(f"{'':<18} seawall / qemu-nbd = {summary[job.name]['ratio_vs_qemu_nbd']:.2f}x   "
              f"seawall / nbdkit = {summary[job.name]['ratio_vs_nbdkit']:.2f}x", file=out)
    print(file=out)
    print(f"{'replication (seawall runs)':<28} {'written MiB':>11} {'peak buf MiB':>12} "
          f"{'peak RPO s':>10} {'drain s':>8} {'dr cores':>8}", file=out)
    for run in runs:
        if run.replication is None:
            continue
        rep = run.replication
        tripped = "  (buffer guard stopped fio)" if rep["guard_tripped"] else ""
        print(f"{run.job + ' r' + str(run.round):<28} {rep['written_bytes'] / 2**20:>11.0f} "
              f"{rep['max_buffered_bytes'] / 2**20:>12.1f} {rep['max_rpo_s']:>10.2f} "
              f"{rep['drain_s']:>8.2f} {rep['recovery_cpu_s'] / run.wall_s:>8.2f}{tripped}",
              file=out)
    target = summary["target"]
    verdict = "MET" if target["met"] else "NOT MET"
    print(f"\ntarget: {target['what']}: {target['ratio']:.2f}x -> {verdict}", file=out)


def machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            output = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "unavailable"
        return output.strip().splitlines()[0] if output.strip() else "unknown"

    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    return {
        "cores": os.cpu_count(), "cpu": cpu_model, "kernel": platform.release(),
        "python": platform.python_version(), "fio": version(["fio", "--version"]),
        "qemu_nbd": version(["qemu-nbd", "--version"]),
        "nbdkit": version(["nbdkit", "--version"]),
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="measured seconds per fio job and target (after a 2 s ramp)")
    parser.add_argument("--size", default="1G", help="volume / raw file size (default 1G)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every job and target; medians are reported")
    parser.add_argument("--max-buffer", default="6G",
                        help="interrupt a Seawall job when the protected buffer exceeds this")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    parser.add_argument("--profile", action="store_true",
                        help="record py-spy stacks of both agents during the Seawall jobs "
                        "(into bench/results/; slows Seawall down a little)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    size_bytes = parse_size_bytes(args.size)
    max_buffer_bytes = parse_size_bytes(args.max_buffer)
    for tool in ("fio", "qemu-nbd", "nbdkit"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make setup installs it)", file=sys.stderr)
            return 2

    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="seawall-bench-"))
    log_path = workdir / "sites.log"
    runs: list[Run] = []
    started_at = time.strftime("%Y%m%d-%H%M%S")
    profile_prefix = f"profile-{started_at}" if args.profile else None
    if args.profile:
        RESULTS_DIR.mkdir(exist_ok=True)
    try:
        with log_path.open("w") as log:
            servers = Servers(workdir, size_bytes, log)
            try:
                _progress(f"starting qemu-nbd, nbdkit and two Seawall sites in {workdir}")
                servers.start_qemu_nbd()
                servers.start_nbdkit()
                servers.start_seawall()
                _progress("group protecting; measuring")
                for round_index in range(args.rounds):
                    order = TARGETS[round_index % 3:] + TARGETS[:round_index % 3]
                    for job in JOBS:
                        for target in order:
                            run = run_one(servers, job, target, round_index, args.seconds,
                                          max_buffer_bytes, profile_prefix)
                            runs.append(run)
                            _progress(f"round {round_index + 1} {job.name:<18} {target:<9} "
                                      f"{run.fio.iops:>9.0f} IOPS "
                                      f"{run.fio.bytes_per_s / 1e6:>8.1f} MB/s")
            finally:
                servers.close()
    except KeyboardInterrupt:
        print("interrupted; everything stopped and removed", file=sys.stderr)
        return 130
    except Exception:
        print(f"benchmark failed; site logs were in {log_path}", file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(runs)
    document = {
        "benchmark": "nbd_writes",
        "started_at": started_at,
        "command": " ".join([".venv/bin/python", "bench/nbd_writes.py", *sys.argv[1:]]),
        "parameters": {"seconds": args.seconds, "ramp_s": RAMP_S, "size_bytes": size_bytes,
                       "rounds": args.rounds, "jobs": [asdict(job) for job in JOBS]},
        "machine": machine(),
        "summary": summary,
        "runs": [{**asdict(run), "server_cores": run.server_cores} for run in runs],
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    result_path = RESULTS_DIR / f"nbd_writes-{started_at}.json"
    result_path.write_text(json.dumps(document, indent=2) + "\n")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_table(summary, runs, sys.stdout)
        print(f"results: {result_path}")
    return 0


def _progress(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
