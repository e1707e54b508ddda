"""What protecting a VM costs its writes: QEMU's block layer without and with the mirror.

Usage: ``.venv/bin/python bench/vm_protection_cost.py [--seconds 10] [--size 1G] [--rounds 1]``

What runs, in one invocation, on Unix sockets only:
- two ``qemu-storage-daemon`` processes, each serving a sparse raw file of ``--size`` over
  NBD (``--export type=nbd``); their block layer stands for a VM's (the same QEMU code,
  no guest). Both use the same settings (``cache.direct=off``, ``aio=threads``);
- two real sites (``LocalSite``), paired; the protected site's agent watches the second
  daemon's QMP socket (``hypervisor: qmp:DIR``, ``QmpHypervisor``). A capture sink of its
  export (``POST /volumes/sinks``) is the one member of a group protected to the recovery
  site (checkpoint every 1 s); measuring starts once the group is ``protecting``: the
  write-blocking mirror's full copy is done and every write goes through the sink;
- a reference for the mirror itself: a third daemon mirrored the same way (``QmpHypervisor``
  run by this script, write-blocking, ``sync: none``) into ``qemu-nbd`` serving a raw file
  (``--cache=writeback --aio=threads``): what QEMU's write-blocking mirror costs with a
  C target and no replication, the floor any sink can reach;
- the same fio jobs (nbd engine) against the plain daemon, the daemon mirrored into
  Seawall and the one mirrored into qemu-nbd, one after the other per job: 4 KiB random
  writes at queue depth 16 and 1, 1 MiB sequential writes at queue depth 4.

After each mirrored job the script waits until the recovery site acknowledged everything
(``acked_seq`` reaches the ``last_seq`` seen when fio ended) and checks that the mirror
still runs (an ended mirror or a buffer overflow is reported: the figures are then not
those of a protected disk). Targets (issue 14): QD16 IOPS >= 0.8x, QD1 p99 <= 2x,
sequential >= 0.7x of the plain daemon. The load average before and after is reported.

Results: a table on stdout (or the JSON with ``--json``) and a JSON file in
``bench/results/``. Every process and temporary file is removed on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from common import FioJob, FioResult, cpu_seconds, run_fio, spawn, wait_for_socket
from seawall.config import CONFIG_NAME
from seawall.contract.agent_api import AgentApi
from seawall.contract.vms import SinkCreate
from seawall.hypervisor.qmp_adapter import QmpHypervisor, socket_uuid
from seawall.localsites import LocalSite, stop_process
from seawall.manager.clients import agent_client
from seawall.units import parse_size_bytes

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RAMP_S = 2.0
DRAIN_TIMEOUT_S = 600.0
BUFFER_BYTES = 3 << 30
"""The protected agent's buffer: large enough that the sequential job does not overflow it
on this machine (an overflow re-copies the disk and is reported as such)."""
JOBS = (
    FioJob("randwrite-4k-qd16", "randwrite", "4k", 16),
    FioJob("randwrite-4k-qd1", "randwrite", "4k", 1),
    FioJob("write-1m-qd4", "write", "1M", 4),
)
TARGETS = ("plain", "mirrored", "mirrored-qemu-nbd")
GROUP = "bench"


@dataclass
class Run:
    job: str
    target: str
    round: int
    fio: FioResult
    daemon_cpu_s: float
    agent_cpu_s: float
    recovery_agent_cpu_s: float
    wall_s: float
    drain_s: float = 0.0
    group_state_after: str = ""
    mirror_after: str = ""
    overflows: int = 0
    sink_writes: int = 0  # the requests the sink took during the job (QEMU may split)


class Bench:
    """The two daemons and the two sites; ``close`` stops them all."""

    def __init__(self, workdir: Path, size_bytes: int) -> None:
        self.workdir = workdir
        self.size_bytes = size_bytes
        self.log_path = workdir / "servers.log"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.sites: list[LocalSite] = []
        self.uris: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.prod: LocalSite | None = None
        self.qmp_dir = workdir / "qmp"

    def start_daemon(self, target: str, qmp: Path | None) -> None:
        image = self.workdir / f"{target}.raw"
        with image.open("xb") as handle:
            handle.truncate(self.size_bytes)
        nbd = self.workdir / f"{target}.nbd"
        argv = ["qemu-storage-daemon",
                "--blockdev", f"driver=file,filename={image},node-name=file0,"
                "cache.direct=off,aio=threads",
                "--blockdev", "driver=raw,file=file0,node-name=disk0",
                "--nbd-server", f"addr.type=unix,addr.path={nbd}",
                "--export", "type=nbd,id=exp0,node-name=disk0,name=disk0,writable=on"]
        if qmp is not None:
            argv += ["--chardev", f"socket,id=qmp0,path={qmp},server=on,wait=off",
                     "--monitor", "chardev=qmp0"]
        process = spawn(argv, self.log_path)
        self.processes.append(process)
        wait_for_socket(nbd, process)
        self.uris[target] = f"nbd+unix:///disk0?socket={nbd}"
        self.pids[target] = process.pid

    def start_reference_mirror(self) -> None:
        """The third daemon, mirrored into qemu-nbd by the adapter (this process holds its
        QMP connection only while attaching: the job lives on in the daemon)."""
        image = self.workdir / "qemu-nbd-target.raw"
        with image.open("xb") as handle:
            handle.truncate(self.size_bytes)
        socket = self.workdir / "qemu-nbd.sock"
        process = spawn(["qemu-nbd", "-t", "-k", str(socket), "-f", "raw", "-x", "target",
                         "--cache=writeback", "--aio=threads", str(image)], self.log_path)
        self.processes.append(process)
        wait_for_socket(socket, process)
        qmp_dir = self.workdir / "qmp-reference"
        qmp_dir.mkdir()
        self.start_daemon("mirrored-qemu-nbd", qmp_dir / "ref.qmp")

        async def attach() -> None:
            adapter = QmpHypervisor(qmp_dir)
            try:
                uuid = socket_uuid(qmp_dir / "ref.qmp")
                await adapter.attach_mirror(uuid, "exp0", socket, "target", full_copy=False)
                for _ in range(100):
                    if (await adapter.mirrored_disks(uuid)).get("exp0"):
                        return
                    await asyncio.sleep(0.1)
                raise RuntimeError("the reference mirror did not get ready")
            finally:
                await adapter.close()
        asyncio.run(attach())

    def start_sites(self, log: Any) -> None:
        qmp = self.qmp_dir / "vm.qmp"
        prod = LocalSite("prod", self.workdir / "prod", log, buffer_bytes=BUFFER_BYTES)
        config_path = prod.directory / CONFIG_NAME
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, "hypervisor": f"qmp:{self.qmp_dir}"}))
        dr = LocalSite("dr", self.workdir / "dr", log)
        self.sites += [prod, dr]
        for site in self.sites:
            site.start()
        prod.pair_with(dr)
        AgentApi(agent_client(prod.config)).create_sink(SinkCreate(
            name="vm-disk", size_bytes=self.size_bytes, vm_uuid=socket_uuid(qmp),
            disk="exp0"))
        prod.api.post("/api/v1/groups", {"name": GROUP, "volumes": ["vm-disk"], "to": "dr",
                                         "checkpoint_interval_s": 1.0})
        prod.wait_protecting(GROUP, timeout_s=600.0)
        self.prod = prod
        self.pids["agent"] = int((prod.config.run_dir / "agent.pid").read_text())
        self.pids["recovery agent"] = int((dr.config.run_dir / "agent.pid").read_text())

    def close(self) -> None:
        for site in self.sites:
            site.stop()
        for process in self.processes:
            stop_process(process, 10.0)


def run_one(bench: Bench, job: FioJob, target: str, round_index: int,
            seconds: float) -> Run:
    prod = bench.prod
    assert prod is not None
    argv = job.argv(bench.uris[target], bench.size_bytes, seconds, RAMP_S)
    pids = (bench.pids[target], bench.pids["agent"], bench.pids["recovery agent"])
    cpu_before = [cpu_seconds(pid) for pid in pids]
    before = prod.group_status(GROUP)
    started = time.monotonic()
    result = run_fio(argv, timeout_s=seconds + RAMP_S + 120)
    wall_s = time.monotonic() - started
    daemon_cpu_s, agent_cpu_s, recovery_cpu_s = (
        cpu_seconds(pid) - before_s for pid, before_s in zip(pids, cpu_before, strict=True))
    run = Run(job.name, target, round_index, result, daemon_cpu_s, agent_cpu_s,
              recovery_cpu_s, wall_s)
    if target == "mirrored":
        last_seq = prod.group_status(GROUP)["last_seq"]
        drain_started = time.monotonic()
        while prod.group_status(GROUP)["acked_seq"] < last_seq:
            if time.monotonic() - drain_started > DRAIN_TIMEOUT_S:
                raise TimeoutError(f"replication did not drain in {DRAIN_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        run.drain_s = time.monotonic() - drain_started
        after = prod.group_status(GROUP)
        run.group_state_after = after["state"]
        run.mirror_after = after["mirrors"]["vm-disk"]
        run.overflows = after["overflows"] - before["overflows"]
        run.sink_writes = after["write_count"] - before["write_count"]
    return run


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _median(runs: list[Run], job: str, target: str, attr: str) -> float:
    values = [getattr(r.fio, attr) for r in runs if r.job == job and r.target == target]
    return statistics.median(values) if values else 0.0


def summarize(runs: list[Run]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for job in JOBS:
        summary[job.name] = {target: {attr: _median(runs, job.name, target, attr)
                                      for attr in ("iops", "bytes_per_s", "clat_p50_us",
                                                   "clat_p99_us")}
                             for target in TARGETS}
    qd16, qd1, seq = (summary[job.name] for job in JOBS)
    summary["targets"] = [
        _target("4 KiB randwrite QD16 IOPS, mirrored / plain >= 0.8x",
                qd16["mirrored"]["iops"] / qd16["plain"]["iops"], lambda r: r >= 0.8),
        _target("4 KiB randwrite QD1 p99 latency, mirrored / plain <= 2x",
                qd1["mirrored"]["clat_p99_us"] / qd1["plain"]["clat_p99_us"],
                lambda r: r <= 2.0),
        _target("1 MiB sequential writes, mirrored / plain >= 0.7x",
                seq["mirrored"]["bytes_per_s"] / seq["plain"]["bytes_per_s"],
                lambda r: r >= 0.7),
    ]
    summary["reference_mirror_into_qemu_nbd"] = {
        "qd16_iops_ratio": _ratio(qd16["mirrored-qemu-nbd"]["iops"], qd16["plain"]["iops"]),
        "qd1_p99_ratio": _ratio(qd1["mirrored-qemu-nbd"]["clat_p99_us"],
                                qd1["plain"]["clat_p99_us"]),
        "sequential_ratio": _ratio(seq["mirrored-qemu-nbd"]["bytes_per_s"],
                                   seq["plain"]["bytes_per_s"]),
    }
    summary["protected_throughout"] = all(
        r.group_state_after == "protecting" and r.mirror_after == "mirroring"
        and r.overflows == 0 for r in runs if r.target == "mirrored")
    return summary


def _target(what: str, ratio: float, met: Any) -> dict[str, Any]:
    return {"what": what, "ratio": ratio, "met": bool(met(ratio))}


def print_table(summary: dict[str, Any], runs: list[Run], load: dict[str, Any]) -> None:
    header = f"{'job':<18} {'target':<17} {'IOPS':>9} {'MB/s':>8} {'p50 us':>8} {'p99 us':>9}"
    print(header)
    print("-" * len(header))
    for job in JOBS:
        for target in TARGETS:
            figures = summary[job.name][target]
            print(f"{job.name:<18} {target:<17} {figures['iops']:>9.0f} "
                  f"{figures['bytes_per_s'] / 1e6:>8.1f} {figures['clat_p50_us']:>8.0f} "
                  f"{figures['clat_p99_us']:>9.0f}")
    print()
    for run in runs:
        if run.target == "mirrored":
            print(f"{run.job + ' r' + str(run.round):<24} drain {run.drain_s:5.2f} s, cores: "
                  f"daemon {run.daemon_cpu_s / run.wall_s:.2f}, agent "
                  f"{run.agent_cpu_s / run.wall_s:.2f}, recovery agent "
                  f"{run.recovery_agent_cpu_s / run.wall_s:.2f}; after: "
                  f"{run.group_state_after} / mirror {run.mirror_after}, "
                  f"overflows {run.overflows}, sink writes {run.sink_writes}")
        else:
            print(f"{run.job + ' r' + str(run.round):<24} ({run.target}) cores: daemon "
                  f"{run.daemon_cpu_s / run.wall_s:.2f}")
    print(f"\nload average before {load['before']}, after {load['after']} "
          f"({os.cpu_count()} cores)")
    for target in summary["targets"]:
        verdict = "MET" if target["met"] else "NOT MET"
        print(f"target: {target['what']}: {target['ratio']:.2f}x -> {verdict}")
    reference = summary["reference_mirror_into_qemu_nbd"]
    print(f"reference, mirrored into qemu-nbd / plain: QD16 IOPS "
          f"{reference['qd16_iops_ratio']:.2f}x, QD1 p99 {reference['qd1_p99_ratio']:.2f}x, "
          f"sequential {reference['sequential_ratio']:.2f}x")
    if not summary["protected_throughout"]:
        print("WARNING: the mirror did not stay attached through every mirrored job")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per fio job and target (after a 2 s ramp)")
    parser.add_argument("--size", default="1G", help="disk size (default 1G)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every job and target; medians are reported")
    parser.add_argument("--json", action="store_true", help="print the JSON result on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    size_bytes = parse_size_bytes(args.size)
    for tool in ("fio", "qemu-storage-daemon", "qemu-nbd"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="seawall-bench-vm-"))
    runs: list[Run] = []
    started_at = time.strftime("%Y%m%d-%H%M%S")
    load = {"before": os.getloadavg(), "after": (0.0, 0.0, 0.0)}
    try:
        with (workdir / "sites.log").open("w") as log:
            bench = Bench(workdir, size_bytes)
            try:
                _progress(f"starting two qemu-storage-daemons and two sites in {workdir}")
                bench.qmp_dir.mkdir()
                bench.start_daemon("plain", None)
                bench.start_daemon("mirrored", bench.qmp_dir / "vm.qmp")
                bench.start_reference_mirror()
                bench.start_sites(log)
                _progress("mirror attached, group protecting; measuring")
                for round_index in range(args.rounds):
                    for job in JOBS:
                        shift = round_index % len(TARGETS)
                        order = TARGETS[shift:] + TARGETS[:shift]
                        for target in order:
                            run = run_one(bench, job, target, round_index, args.seconds)
                            runs.append(run)
                            _progress(f"round {round_index + 1} {job.name:<18} {target:<17} "
                                      f"{run.fio.iops:>9.0f} IOPS "
                                      f"p99 {run.fio.clat_p99_us:>7.0f} us "
                                      f"{run.fio.bytes_per_s / 1e6:>8.1f} MB/s")
            finally:
                load["after"] = os.getloadavg()
                bench.close()
    except KeyboardInterrupt:
        print("interrupted; everything stopped and removed", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(runs)
    document = {
        "benchmark": "vm_protection_cost",
        "started_at": started_at,
        "command": " ".join([".venv/bin/python", "bench/vm_protection_cost.py", *sys.argv[1:]]),
        "parameters": {"seconds": args.seconds, "ramp_s": RAMP_S, "size_bytes": size_bytes,
                       "rounds": args.rounds, "jobs": [asdict(job) for job in JOBS]},
        "load_average": load,
        "summary": summary,
        "runs": [asdict(run) for run in runs],
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    result_path = RESULTS_DIR / f"vm_protection_cost-{started_at}.json"
    result_path.write_text(json.dumps(document, indent=2) + "\n")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_table(summary, runs, load)
        print(f"results: {result_path}")
    return 0


def _progress(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
