"""Group settings end to end: ``seawall group update/show`` on a protecting group, two sites.

A change of checkpoint interval, priority, compression, history and journal limit is shown
by ``group show`` at both sites and taken by both agents at once (status, checkpoint rate),
with no resync: the group stays protecting and its sync is the same one (same start, no
overflow). An invalid update, refused at the protected site or at the recovery site,
changes nothing at either.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from seawall.errors import InvalidInput
from seawall.localsites import LocalSite
from seawall.manager.clients import agent_client
from support.cli import seawall
from support.groups import GROUP, protect

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 4 << 20


def show(site: LocalSite) -> dict[str, Any]:
    settings: dict[str, Any] = json.loads(
        seawall(site, "group", "show", GROUP, "--json").stdout)["settings"]
    return settings


def agents(prod: LocalSite, dr: LocalSite) -> tuple[dict[str, Any], dict[str, Any]]:
    return prod.group_status(GROUP), dr.group_status(GROUP)


def test_update_applies_at_both_sites_without_resync(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    protect(prod, dr, bytearray(VOLUME_BYTES), count=8)
    before, _ = agents(prod, dr)
    assert show(prod) == show(dr)
    assert show(dr)["recovery_agent"] == "dr"

    result = seawall(prod, "group", "update", GROUP, "--checkpoint-interval", "100ms",
                     "--priority", "high", "--compression", "lz4", "--history", "48h",
                     "--journal-max", "1G", "--journal-warning", "80%", "--rpo-alert", "2m")
    updated_ns = time.time_ns()
    assert "history_s: 86400 s -> 172800 s" in result.stderr
    assert "priority: medium -> high" in result.stderr
    expected = {"checkpoint_interval_s": 0.1, "priority": "high", "compression": "lz4",
                "history_s": 172800.0, "journal_max_bytes": 1 << 30,
                "journal_warning_ratio": 0.8, "rpo_alert_s": 120.0}
    for site in (prod, dr):
        assert show(site).items() >= expected.items(), site.name

    time.sleep(1.5)
    protected, recovery = agents(prod, dr)
    assert protected["checkpoint_interval_s"] == 0.1
    assert (protected["wan"]["priority"], protected["wan"]["codec"]) == ("high", "lz4")
    assert protected["wan"]["codec_in_use"] == "lz4"
    recent = [c for c in prod.api.get(f"/api/v1/groups/{GROUP}/checkpoints")
              if c["time_ns"] > updated_ns]
    assert len(recent) >= 5, recent  # at the old 0.5 s, 1.5 s would make 3 at most
    assert (recovery["journal_max_bytes"], recovery["history_target_s"],
            recovery["journal_warning_ratio"]) == (1 << 30, 172800.0, 0.8)
    # No resync: still protecting, the same sync as before (same start), no overflow.
    assert protected["state"] == "protecting"
    assert protected["sync"]["started_ns"] == before["sync"]["started_ns"]
    assert protected["overflows"] == before["overflows"] == 0

    settings_before = show(prod)
    scripts_dir = dr.config.scripts_dir
    script = scripts_dir / "pre.sh"
    script.write_text("#!/bin/sh\necho pre\n")
    script.chmod(0o755)
    writable = scripts_dir / "writable.sh"
    writable.write_text("#!/bin/sh\n")
    writable.chmod(0o777)
    (scripts_dir / "escape.sh").symlink_to("/bin/true")
    refused = [  # each refused whole: the valid --priority low with it does not apply
        ("--history", "10m", "history must be between 1h and 30d"),
        ("--boot-order", "web:5s", "boot order names web, not in the group"),
        ("--pre-script", "missing.sh", f"no script missing.sh in {scripts_dir}"),
        ("--storage", str(tmp_path), "storage_path is set when the group is created"),
        # A script is one the recovery site's admin put in its scripts directory: issue 12
        # found `--pre-script /sbin/poweroff` accepted at the protected site.
        ("--pre-script", "/sbin/poweroff", f"script '/sbin/poweroff' is outside {scripts_dir}"),
        ("--post-script", "../../pre.sh", "must be the name of a script in the recovery site"),
        ("--pre-script", "escape.sh", f"script 'escape.sh' is outside {scripts_dir}"),
        ("--pre-script", "writable.sh", "is writable by group or others"),
    ]
    for option, value, message in refused:
        result = seawall(prod, "group", "update", GROUP, "--priority", "low", option, value,
                         check=False)
        assert result.returncode == 2, (option, result.stderr)
        assert message in " ".join(result.stderr.split()), result.stderr
    # The recovery agent itself runs only scripts of that directory, whoever asks it
    # (issue 12: its control API ran `/usr/bin/id` as root for any local user).
    agent = agent_client(dr.config)
    with pytest.raises(InvalidInput, match=f"script '/usr/bin/id' is outside {scripts_dir}"):
        agent.post("/scripts/run", {"path": "/usr/bin/id", "timeout_s": 5})
    agent.close()
    at_recovery = seawall(dr, "group", "update", GROUP, "--priority", "low", check=False)
    assert at_recovery.returncode == 2
    assert "protected site (prod)" in " ".join(at_recovery.stderr.split())
    assert show(prod) == show(dr) == settings_before
    protected, recovery = agents(prod, dr)
    assert protected["wan"]["priority"] == "high" and recovery["history_target_s"] == 172800.0

    seawall(prod, "group", "update", GROUP, "--pre-script", "pre.sh",
            "--post-script", str(script), "--boot-order", "disk0:30s")  # absolute: inside
    assert (show(dr)["pre_script"], show(dr)["post_script"]) == ("pre.sh", str(script))
    assert show(dr)["boot_order"] == [{"name": "disk0", "delay_s": 30.0}]
    assert prod.group_status(GROUP)["state"] == "protecting"


def test_storage_location_is_checked_at_the_recovery_site_and_holds_the_journal(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    prod.pair_with(dr)
    prod.api.post("/api/v1/volumes", {"name": "disk1", "size_bytes": 1 << 20})
    missing = seawall(prod, "group", "create", "db", "--volume", "disk1", "--to", "dr",
                      "--storage", str(dr.directory / "missing"), check=False)
    assert missing.returncode == 2, missing.stderr
    assert "is not a directory" in " ".join(missing.stderr.split())
    # Only where the recovery site's admin allows (its data directory, --storage-root):
    # the journal is written there as the agent's user.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = seawall(prod, "group", "create", "db", "--volume", "disk1", "--to", "dr",
                      "--storage", str(elsewhere), check=False)
    assert outside.returncode == 2, outside.stderr
    assert "outside the directories this site allows" in " ".join(outside.stderr.split())
    assert list(elsewhere.iterdir()) == []
    assert prod.api.get("/api/v1/groups") == dr.api.get("/api/v1/groups") == []

    storage = dr.directory / "storage"
    storage.mkdir()
    created = json.loads(seawall(prod, "group", "create", "db", "--volume", "disk1", "--to",
                                 "dr", "--storage", str(storage), "--rpo-alert", "1m",
                                 "--boot-order", "disk1:5s", "--json").stdout)
    prod.wait_protecting("db")
    assert (storage / created["group_id"] / "journal").is_dir()
    shown = json.loads(seawall(dr, "group", "show", "db", "--json").stdout)["settings"]
    assert (shown["storage_path"], shown["rpo_alert_s"]) == (str(storage), 60.0)
    assert dr.api.get("/api/v1/status/groups/db")["rpo_alert_s"] == 60.0  # the monitor's
