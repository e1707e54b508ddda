"""Shared fixtures of the end-to-end tests: two real sites on localhost, cleaned up for sure.

Fault tests kill site managers and agents with SIGKILL. An agent runs in its own session
and outlives its manager by design, so a test that ends while a manager is dead would leave
that agent running; ``sites`` therefore stops each site with ``support.sites.stop_for_sure``.

``agent_pid`` and ``kill_agent`` (from ``support.sites``) are fixtures too. Never import a
``conftest.py``: every one outside a package is module ``conftest``, so that is fragile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seawall.localsites import LocalSite
from support.qemu_vm import QemuVm, start_vm
from support.sites import agent_pid, kill_agent, stop_for_sure


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
        prod.launch()  # side by side: half the start-up time of one after the other
        dr.launch()
        prod.wait_started()
        dr.wait_started()
        yield prod, dr
    finally:
        for site in (prod, dr):
            stop_for_sure(site)  # and its agent, left behind if its manager was killed
        log.close()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[QemuVm]:
    """A running test QEMU (``support.qemu_vm``: raw and qcow2 disks, a CD-ROM, a NIC)."""
    started = start_vm(tmp_path / "vm")
    try:
        yield started
    finally:
        started.stop()
