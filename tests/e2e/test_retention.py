"""Journal retention settings through the CLI: validated at creation, applied at the DR site."""

from __future__ import annotations

import json

import pytest

from seawall.localsites import LocalSite
from support.cli import seawall

pytestmark = pytest.mark.e2e


def test_journal_limit_reaches_the_recovery_agent(sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    token = seawall(dr, "site", "token").stdout.strip()
    seawall(prod, "pair", dr.url, "--token", token)
    seawall(prod, "volume", "create", "disk0", "--size", "1M")
    small = seawall(prod, "group", "create", "app", "--volume", "disk0", "--to", "dr",
                    "--journal-max", "10M", check=False)
    assert small.returncode == 2 and "at least 64.0 MiB" in small.stderr
    assert json.loads(seawall(prod, "group", "list", "--json").stdout) == []
    seawall(prod, "group", "create", "app", "--volume", "disk0", "--to", "dr",
            "--history", "2h", "--journal-max", "128M")
    status = json.loads(seawall(dr, "group", "status", "app", "--json").stdout)["agent"]
    assert status["journal_max_bytes"] == 128 << 20 and status["history_target_s"] == 7200.0
    assert status["journal_warning"] is False and status["journal_full"] is False
    assert status["history_short"] is False and status["retention_error"] is None
