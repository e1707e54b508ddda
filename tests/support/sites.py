"""Real local sites in tests and in the fault campaign: kill -9 of an agent, sure cleanup.

Rules:
- An agent runs in its own session and outlives its manager by design, so stopping a site
  whose manager was killed would leave its agent running. ``stop_for_sure`` therefore ends,
  after the orderly stop, any agent still named in the site's ``run/agent.pid`` — and only
  if that pid is an agent of that very directory (its command line names it), never a
  process found by name.
- A pid counts as gone once ``/proc`` no longer shows it or shows it as a zombie (init
  reaps it; we are not its parent).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seawall.config import CONFIG_NAME
from seawall.localsites import LocalSite

AGENT_EXIT_TIMEOUT_S = 10.0


def agent_pid(site: LocalSite) -> int | None:
    """Pid of the site's running agent (from ``run/agent.pid``), None if none is alive."""
    pid_path = site.config.run_dir / "agent.pid"
    try:
        pid = int(pid_path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    is_ours = b"agent" in cmdline and str(site.config.data_dir).encode() in cmdline
    return pid if is_ours else None


def wait_pid_gone(pid: int, timeout_s: float = AGENT_EXIT_TIMEOUT_S) -> bool:
    """Wait until ``pid`` is gone (its zombie reaped by init counts as gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if status == "Z":
            return True
        time.sleep(0.02)
    return False


def kill_agent(site: LocalSite) -> int:
    """SIGKILL the site's agent (the data path), as a host crash of that process would."""
    pid = agent_pid(site)
    assert pid is not None, f"site {site.name} has no running agent"
    os.kill(pid, signal.SIGKILL)
    assert wait_pid_gone(pid), f"agent {pid} of site {site.name} survived SIGKILL"
    return pid


def stop_for_sure(site: LocalSite) -> None:
    """Stop the site, then end its agent if a killed manager left it behind."""
    site.stop()
    pid = agent_pid(site)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_pid_gone(pid)


def configure(site: LocalSite, **settings: Any) -> None:
    """Settings written into a (stopped) site's ``site.json``, as an operator edits it."""
    path = site.directory / CONFIG_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **settings}))


@contextlib.contextmanager
def running_pair(prod: LocalSite, dr: LocalSite) -> Iterator[tuple[LocalSite, LocalSite]]:
    """Both sites started side by side and ``prod`` paired with ``dr``; both stopped for
    sure at the end, their agents included."""
    try:
        prod.launch()
        dr.launch()
        prod.wait_started()
        dr.wait_started()
        prod.pair_with(dr)
        yield prod, dr
    finally:
        for site in (prod, dr):
            stop_for_sure(site)
