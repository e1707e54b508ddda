"""Two real Seawall sites for the replication benchmarks, and what every run records.

Rules:
- ``SitePair`` is two ``LocalSite``s (manager + agent each, real processes) in one work
  directory, paired, protected side ``prod`` and recovery side ``dr``; closing it stops
  both and makes sure no agent outlives it (agents run in their own session).
- ``CpuMeter`` tells how busy the machine was during a measurement and how much of that
  was *not* ours (other sessions' tests share the 2 cores): a figure measured while
  ``other_cores`` was high is polluted, and the documents say so.
- ``wait_for_quiet`` waits (bounded) for the 1-minute load average to drop before a
  measurement starts; it never fails, it reports what it saw.
- Caches: ``drop_caches`` needs root; it reports whether it could.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from common import cpu_seconds
from seawall.errors import SeawallError
from seawall.http import JsonClient
from seawall.localsites import LocalSite

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GROUP = "app"
VOLUME = "disk0"


def agent_pid(site: LocalSite) -> int:
    try:
        return int((site.config.run_dir / "agent.pid").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def _kill_leftover_agent(pid: int, data_dir: Path) -> None:
    if pid <= 0:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return
    if "seawall" not in cmdline or str(data_dir) not in cmdline:  # a recycled pid
        return
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def stop_site(site: LocalSite) -> None:
    """Stop a site (SIGTERM, as an operator would) and wait for its agent to be gone."""
    pid = agent_pid(site)
    try:
        site.stop()
    finally:
        _kill_leftover_agent(pid, site.directory)


class SitePair:
    def __init__(self, workdir: Path, log: TextIO, buffer_bytes: int = 512 << 20,
                 bitmap_bytes: int = 8 << 20) -> None:
        self.workdir = workdir
        self.prod = LocalSite("prod", workdir / "prod", log, buffer_bytes=buffer_bytes,
                              bitmap_bytes=bitmap_bytes)
        self.dr = LocalSite("dr", workdir / "dr", log, buffer_bytes=buffer_bytes,
                            bitmap_bytes=bitmap_bytes)
        self._started: list[LocalSite] = []

    def start(self) -> None:
        for site in (self.prod, self.dr):
            self._started.append(site)
            site.start()
        self.prod.pair_with(self.dr)

    def seed_at_recovery(self, path: Path) -> Path:
        """``path`` moved into the recovery site's data directory, where a pre-seed may be
        (elsewhere only with ``site init --storage-root``); its new path."""
        moved = self.dr.directory / "seeds" / path.name
        moved.parent.mkdir(exist_ok=True)
        os.replace(path, moved)
        return moved

    def close(self) -> None:
        for site in self._started:
            stop_site(site)

    def __enter__(self) -> SitePair:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self) -> list[int]:
        """Managers and agents of both sites (the processes whose CPU time is ours)."""
        pids = [agent_pid(site) for site in (self.prod, self.dr)]
        pids += [site.process.pid for site in (self.prod, self.dr) if site.process is not None]
        return [pid for pid in pids if pid > 0]

    def status(self) -> dict[str, Any]:
        return self.prod.group_status(GROUP)


class StatusSampler:
    """Samples the protected group's status every ``interval_s`` in a thread of its own.

    Each sample is ``(seconds since start, status)``; a status the API could not give (the
    agent busy past the timeout) is counted in ``misses``, never invented.
    """

    def __init__(self, site: LocalSite, interval_s: float, group: str = GROUP) -> None:
        self._client = JsonClient(site.url, timeout_s=10.0, what=f"site {site.name}",
                                  token=site.token, tls=site.tls)
        self._path = f"/api/v1/groups/{group}"
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self.misses = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)
        self._started = 0.0

    def start(self) -> StatusSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, dict[str, Any]]]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                status = self._client.get(self._path)["status"]
                self.samples.append((time.monotonic() - self._started, status))
            except SeawallError:
                self.misses += 1
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))


# --- waiting -------------------------------------------------------------------------


def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float,
               poll_s: float = 0.05) -> float:
    """Seconds until ``predicate()`` held; TimeoutError naming ``what`` after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(poll_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(max_load: float, timeout_s: float, poll_s: float = 30.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``max_load`` (at most ``timeout_s``)."""
    started = time.monotonic()
    first = load_average()
    while True:
        load = load_average()
        waited = time.monotonic() - started
        if load < max_load or waited >= timeout_s:
            quiet = load < max_load
            progress(f"load {load:.2f} ({'quiet' if quiet else 'NOT quiet'}) after "
                     f"{waited:.0f} s of waiting")
            return {"load_at_first_check": first, "load_at_start": load, "quiet": quiet,
                    "waited_s": round(waited, 1), "max_load": max_load}
        progress(f"load {load:.2f} >= {max_load}: waiting for a quiet machine")
        time.sleep(min(poll_s, max(1.0, timeout_s - waited)))


# --- CPU accounting ------------------------------------------------------------------


def _machine_busy_s() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields]
    # user nice system idle iowait irq softirq steal: busy is what ran here, not the
    # hypervisor's steal
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_tree_s() -> float:
    """This process and its waited-for children (fio, rsync, ... once they exited)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass
class CpuMeter:
    """Busy cores of the machine over an interval, and the share of it that was ours.

    Ours: this benchmark and its reaped children, plus ``pids`` (site managers, agents).
    A child still running when the interval ends (none, in these benchmarks) would be
    counted as somebody else's.
    """

    pids: list[int] = field(default_factory=list)
    _started: float = 0.0
    _busy: float = 0.0
    _own: float = 0.0
    _pids_cpu: dict[int, float] = field(default_factory=dict)

    def start(self, pids: Iterable[int] = ()) -> None:
        self.pids = list(pids)
        self._started = time.monotonic()
        self._busy = _machine_busy_s()
        self._own = _own_tree_s()
        self._pids_cpu = {pid: cpu_seconds(pid) for pid in self.pids}

    def stop(self) -> dict[str, float]:
        wall_s = time.monotonic() - self._started
        busy = _machine_busy_s() - self._busy
        ours = _own_tree_s() - self._own
        ours += sum(cpu_seconds(pid) - before for pid, before in self._pids_cpu.items())
        return {"wall_s": round(wall_s, 3), "machine_cores": round(busy / wall_s, 3),
                "our_cores": round(ours / wall_s, 3),
                "other_cores": round(max(0.0, busy - ours) / wall_s, 3)}


# --- files and caches ----------------------------------------------------------------


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); False if that is not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def run_timed(argv: list[str], log: Path) -> float:
    """Run ``argv`` to completion (output to ``log``); its wall time in seconds."""
    started = time.monotonic()
    with log.open("ab") as handle:
        subprocess.run(argv, stdout=handle, stderr=handle, check=True)
    return time.monotonic() - started


def seawall_cli(site: LocalSite, *args: str) -> str:
    """``seawall ARGS`` against ``site``, as an operator runs it; its stdout."""
    result = subprocess.run([sys.executable, "-m", "seawall", *args], capture_output=True,
                            text=True, env={**os.environ, "SEAWALL_URL": site.url,
                                            "SEAWALL_TOKEN": site.token},
                            timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"seawall {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def progress(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a real sample)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


@contextlib.contextmanager
def workdir(prefix: str, keep: bool) -> Iterator[Path]:
    """A temporary directory (``$SEAWALL_BENCH_DIR`` or the system's), removed unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("SEAWALL_BENCH_DIR")))
    try:
        yield path
    finally:
        if keep:
            progress(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
