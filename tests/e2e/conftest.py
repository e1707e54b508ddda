"""Shared fixtures of the end-to-end tests: two real sites on localhost, cleaned up for sure.

Fault tests kill site managers and agents with SIGKILL. An agent runs in its own session
and outlives its manager by design, so a test that ends while a manager is dead would leave
that agent running; ``sites`` therefore ends, after the orderly stop, any agent still named
in a site's ``run/agent.pid`` — and only if that pid is an agent of that very directory.

Helpers reach test modules as fixtures (``agent_pid``, ``kill_agent``), not imports: every
``conftest.py`` outside a package is module ``conftest``, so importing one is fragile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(name="agent_pid")
def agent_pid_fixture() -> Callable[[LocalSite], int | None]:
    """``agent_pid(site)``: the pid of the site's running agent, or None."""
    return agent_pid


@pytest.fixture(name="kill_agent")
def kill_agent_fixture() -> Callable[[LocalSite], int]:
    """``kill_agent(site)``: SIGKILL the site's agent and wait until it is gone."""
    return kill_agent


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[LocalSite, LocalSite]]:
    """A started ``prod`` and ``dr`` site (not paired); every process ends with the test."""
    log = (tmp_path / "sites.log").open("w")
    prod = LocalSite("prod", tmp_path / "prod", log)
    dr = LocalSite("dr", tmp_path / "dr", log)
    try:
        prod.start()
        dr.start()
        yield prod, dr
    finally:
        for site in (prod, dr):
            site.stop()
            pid = agent_pid(site)  # left behind if its manager was killed and not restarted
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_pid_gone(pid)
        log.close()
