"""WAN controls end to end: a site created with ``--throttle 4M`` replicates at that rate.

Sites are made with the real ``seawall site init`` (so its options are what is tested),
then run as in the other end-to-end tests. The rate is measured where the bytes land: the
recovery site's count of received frame bytes, sampled over a few seconds of backlog. The
data is random, so compression cannot make the wire rate differ from the write rate.
(Sharing by priority is shown on simulated time in tests/wan/test_throttle.py and on a real
event loop in tests/wan/test_site_throttle.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seawall.localsites import LocalSite, free_port
from seawall.nbd.blocking import NbdClient
from support.cli import seawall

pytestmark = pytest.mark.e2e
MIB = 1 << 20
THROTTLE_BYTES_PER_S = 4 * MIB
BACKLOG_BYTES = 28 * MIB  # seven seconds of sending at the limit
MEASURE_AFTER_S = 1.0
MEASURE_FOR_S = 4.0


def init_site(name: str, directory: Path, *options: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "seawall", "site", "init", "--name", name,
         "--data", str(directory), "--api", f"127.0.0.1:{free_port()}",
         "--replication", f"127.0.0.1:{free_port()}",
         "--peer-api", f"127.0.0.1:{free_port()}", *options],
        check=True, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def throttled_sites(
    tmp_path: Path, agent_pid: Callable[[LocalSite], int | None],
) -> Iterator[tuple[LocalSite, LocalSite]]:
    init_site("prod", tmp_path / "prod", "--throttle", "4M")
    init_site("dr", tmp_path / "dr")
    log = (tmp_path / "sites.log").open("w")
    sites = (LocalSite("prod", tmp_path / "prod", log), LocalSite("dr", tmp_path / "dr", log))
    try:
        for site in sites:
            site.start()
        yield sites
    finally:
        for site in sites:
            site.stop()
            pid = agent_pid(site)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        log.close()


def test_replication_keeps_to_the_site_throttle(
    throttled_sites: tuple[LocalSite, LocalSite],
) -> None:
    prod, dr = throttled_sites
    prod.pair_with(dr)
    uri = prod.api.post("/api/v1/volumes", {"name": "disk0", "size_bytes": 32 * MIB})["nbd_uri"]
    seawall(prod, "group", "create", "app", "--volume", "disk0", "--to", "dr",
            "--priority", "high", "--compression", "lz4")
    prod.wait_protecting("app")

    wan = json.loads(seawall(prod, "group", "status", "app", "--json").stdout)["agent"]["wan"]
    assert wan["throttle_bytes_per_s"] == THROTTLE_BYTES_PER_S
    assert (wan["priority"], wan["codec"], wan["zstd_level"]) == ("high", "lz4", None)
    table = seawall(prod, "group", "status", "app").stdout
    assert "wan.throttle_bytes_per_s" in table and "wan.priority" in table

    rng = random.Random(3)
    with NbdClient(uri).connect() as client:
        for offset in range(0, BACKLOG_BYTES, MIB):
            client.write(offset, rng.randbytes(MIB))
    time.sleep(MEASURE_AFTER_S)  # past the bucket's initial burst: steady state
    start_s, start_bytes = time.monotonic(), dr.group_status("app")["received_bytes"]
    time.sleep(MEASURE_FOR_S)
    end_s, end_bytes = time.monotonic(), dr.group_status("app")["received_bytes"]
    assert prod.group_status("app")["buffered_bytes"] > MIB  # still backlogged throughout

    rate_bytes_per_s = (end_bytes - start_bytes) / (end_s - start_s)
    measured = f"replicated at {rate_bytes_per_s / MIB:.2f} MiB/s under a 4 MiB/s throttle"
    assert rate_bytes_per_s <= THROTTLE_BYTES_PER_S * 1.15, measured
    # Not a stall (a loose bound: on a loaded 2-core machine the agents may lag the limit).
    assert rate_bytes_per_s >= THROTTLE_BYTES_PER_S * 0.25, measured
