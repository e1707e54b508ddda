"""A full recovery journal: the protected site backs off and re-ships nothing, then resumes.

The recovery site's journal filesystem is a real tmpfs, filled up; replication runs through
a ``FaultProxy`` (the recovery site advertises the proxy's port) that counts the sessions
opened and the bytes sent. While the journal stays full, sessions come further and further
apart and carry no records; once space returns, protection resumes by itself and every
checkpoint still offered reads back byte for byte.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import pytest

from seawall.localsites import LocalSite, free_port
from support.faultproxy import FaultProxy
from support.groups import GROUP, protect, tag, write
from support.groups import verify as verify_exports
from support.sites import stop_for_sure
from support.tmpfs import fill, mounted_tmpfs

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 32 << 20
WATCH_S = 10.0
MAX_SESSIONS = 5  # back-off 0.5, 1, 2, 4, 8 s: at most 5 attempts in any 10 s
MAX_SHIPPED_BYTES = 1 << 20  # handshakes only (each a few KiB): no record is sent again


def wait_for(what: str, predicate: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_full_journal_gets_backed_off_probes_then_replication_resumes_exactly(
    tmp_path: Path,
) -> None:
    log = (tmp_path / "sites.log").open("w")
    proxy_port = free_port()
    prod = LocalSite("prod", tmp_path / "prod", log)
    dr = LocalSite("dr", tmp_path / "dr", log, advertise_replication=f"127.0.0.1:{proxy_port}")
    try:
        prod.launch()
        dr.launch()
        prod.wait_started()
        dr.wait_started()
        with FaultProxy("127.0.0.1", dr.config.replication_port,
                        listen_port=proxy_port) as proxy, \
                mounted_tmpfs(dr.config.journals_dir, 96 << 20) as journals:
            model = bytearray(VOLUME_BYTES)
            uri = protect(prod, dr, model, count=64)
            assert proxy.connections_accepted >= 1, "replication bypasses the proxy"
            expected = {tag(prod, dr, "before"): hashlib.sha256(model).hexdigest()}

            filler = journals / "filler"
            fill(filler, leave_bytes=2 << 20)
            write(uri, model, random.Random(8), count=96)  # 6 MiB: more than is left
            wait_for("paused", lambda: prod.group_status(GROUP)["state"] == "paused")
            status = prod.group_status(GROUP)
            assert status["refusal"]["code"] == "journal_full", status

            sessions, shipped = proxy.connections_accepted, proxy.bytes_upstream
            time.sleep(WATCH_S)
            sessions = proxy.connections_accepted - sessions
            shipped = proxy.bytes_upstream - shipped
            print(f"journal full for {WATCH_S:g} s: {sessions} sessions, {shipped} bytes sent")
            assert sessions <= MAX_SESSIONS, sessions
            assert shipped <= MAX_SHIPPED_BYTES, shipped
            assert prod.group_status(GROUP)["state"] == "paused"
            assert dr.group_status(GROUP)["journal_full"]

            filler.unlink()
            wait_for("protecting with nothing buffered",
                     lambda: (s := prod.group_status(GROUP))["state"] == "protecting"
                     and not s["buffered_records"])
            expected[tag(prod, dr, "after")] = hashlib.sha256(model).hexdigest()
            assert not dr.group_status(GROUP)["journal_full"]
            # A full journal filesystem lets retention apply the oldest records early, so
            # "before" may have aged out: every checkpoint still offered must be exact.
            offered = {c["id"] for c in dr.api.get(f"/api/v1/groups/{GROUP}/checkpoints")}
            assert max(expected) in offered
            verify_exports(dr, {c: h for c, h in expected.items() if c in offered},
                           VOLUME_BYTES)
    finally:
        for site in (prod, dr):
            stop_for_sure(site)
        log.close()
