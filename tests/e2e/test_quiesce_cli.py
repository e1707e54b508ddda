"""``checkpoint tag --quiesce`` and ``--quiesce-every`` through the CLI, two real sites.

The group here holds a plain volume (no VM): a quiesced tag is taken, crash-consistent,
with a note saying why; both sites list its consistency (the recovery site from its
journal, where the CHECKPOINT record carries it). The application-consistent path with a
real guest agent is ``tests/vm/test_quiesce.py``.
"""

from __future__ import annotations

import json
import time

import pytest

from seawall.localsites import LocalSite
from support.cli import refused, run_json, seawall

pytestmark = pytest.mark.e2e


def test_quiesced_tag_without_vms_and_the_quiesce_every_setting(
        sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    seawall(prod, "pair", dr.url, "--token", seawall(dr, "site", "token").stdout.strip())
    seawall(prod, "volume", "create", "disk0", "--size", "8M")
    seawall(prod, "group", "create", "app", "--volume", "disk0", "--to", "dr",
            "--checkpoint-interval", "1h")
    prod.wait_protecting("app")

    plain = int(seawall(prod, "checkpoint", "tag", "app", "--name", "plain").stdout)
    tagged = seawall(prod, "checkpoint", "tag", "app", "--name", "quiesced", "--quiesce")
    first, *notes = tagged.stdout.strip().splitlines()
    quiesced_id, consistency = first.split(" consistency: ")
    assert consistency == "crash" and int(quiesced_id) > plain
    assert notes == ["note: the group has no VMs to freeze: crash-consistent"]
    forwarded = seawall(dr, "checkpoint", "tag", "app", "--quiesce")  # dr asks prod
    assert forwarded.stdout.split(" consistency: ")[1].startswith("crash")

    at_prod = {c["id"]: c for c in run_json(prod, "checkpoint", "list", "app")}
    assert at_prod[plain]["consistency"] == at_prod[int(quiesced_id)]["consistency"] == "crash"
    table = seawall(prod, "checkpoint", "list", "app").stdout
    assert "consistency" in table.splitlines()[0]

    # the recovery site lists from its journal: the record's field, not the agent's log
    for _ in range(100):
        at_dr = {c["id"]: c for c in run_json(dr, "checkpoint", "list", "app")}
        if int(quiesced_id) in at_dr:
            break
        time.sleep(0.1)
    assert at_dr[int(quiesced_id)]["consistency"] == "crash"

    seawall(prod, "group", "update", "app", "--quiesce-every", "1h")
    assert {run_json(site, "group", "show", "app")["settings"]["quiesce_every_s"]
            for site in (prod, dr)} == {3600.0}
    assert prod.group_status("app")["quiesce_every_s"] == 3600.0  # the agent has it
    too_often = refused(prod, "group", "update", "app", "--quiesce-every", "10s")
    assert "quiesce interval must be between 1m and 1d" in too_often.stderr
    seawall(prod, "group", "update", "app", "--quiesce-every", "none")
    shown = json.loads(seawall(prod, "group", "show", "app", "--json").stdout)
    assert shown["settings"]["quiesce_every_s"] == 0.0
