"""Helpers shared by the benchmarks: child processes that die with us, fio, CPU accounting.

Rules:
- Every child is started with ``PR_SET_PDEATHSIG`` (SIGTERM), so even a ``kill -9`` of the
  benchmark takes its servers and fio with it; normal exits stop children by their pid.
- Only Unix sockets and loopback addresses are used.
- fio runs with ``--output-format=json``; only the numbers we report are parsed out.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout/stderr to ``log``; it gets SIGTERM if we die."""
    with log.open("ab") as handle:
        return subprocess.Popen(list(argv), stdout=handle, stderr=handle,
                                stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def wait_for_socket(path: Path, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear in {timeout_s:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass(frozen=True)
class FioJob:
    name: str
    rw: str
    block_size: str
    iodepth: int

    def argv(self, uri: str, size_bytes: int, seconds: float, ramp_s: float) -> list[str]:
        return [
            "fio", f"--name={self.name}", "--ioengine=nbd", f"--uri={uri}",
            f"--rw={self.rw}", f"--bs={self.block_size}", f"--iodepth={self.iodepth}",
            f"--size={size_bytes}", "--numjobs=1", "--time_based",
            f"--runtime={seconds:g}s", f"--ramp_time={ramp_s:g}s",
            "--output-format=json",
        ]


@dataclass(frozen=True)
class FioResult:
    iops: float
    bytes_per_s: float
    clat_p50_us: float
    clat_p99_us: float
    fio_cpu_percent: float
    errors: int

    @classmethod
    def parse(cls, output: str) -> FioResult:
        # fio may print notes before the JSON document.
        document: dict[str, Any] = json.loads(output[output.index("{"):])
        job = document["jobs"][0]
        write = job["write"]
        percentiles = write.get("clat_ns", {}).get("percentile", {})
        return cls(
            iops=float(write["iops"]),
            bytes_per_s=float(write["bw_bytes"]),
            clat_p50_us=float(percentiles.get("50.000000", 0)) / 1000,
            clat_p99_us=float(percentiles.get("99.000000", 0)) / 1000,
            fio_cpu_percent=float(job["usr_cpu"]) + float(job["sys_cpu"]),
            errors=int(job.get("error", 0)),
        )


def run_fio(argv: Sequence[str], timeout_s: float,
            while_running: Callable[[], bool] | None = None) -> FioResult:
    """Run fio to completion; ``while_running`` is called about every 0.5 s meanwhile.

    When it returns True, fio is interrupted (SIGINT: fio stops early and still reports).
    """
    process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_die_with_parent)
    interrupted = False
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                stdout, stderr = process.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise
                if while_running is not None and not interrupted and while_running():
                    process.send_signal(signal.SIGINT)
                    interrupted = True
    finally:
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(Exception):
                process.communicate(timeout=5)
    if process.returncode != 0 and not interrupted:
        raise RuntimeError(f"fio failed ({process.returncode}): {stderr.strip()[-2000:]}")
    try:
        return FioResult.parse(stdout)
    except (ValueError, KeyError, IndexError) as exc:
        raise RuntimeError(f"fio output unreadable ({exc}): {stderr.strip()[-2000:]}") from exc
