"""Running the real ``seawall`` command against a site, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from seawall.localsites import LocalSite


def seawall(site: LocalSite, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``seawall ARGS`` with ``SEAWALL_URL`` set to ``site`` and its admin token in
    ``SEAWALL_TOKEN``; asserts success when ``check``."""
    result = subprocess.run(
        [sys.executable, "-m", "seawall", *args], capture_output=True, text=True,
        env={**os.environ, "SEAWALL_URL": site.url, "SEAWALL_TOKEN": site.token}, timeout=120,
    )
    if check:
        assert result.returncode == 0, f"seawall {' '.join(args)} failed: {result.stderr}"
    return result


def run_json(site: LocalSite, *args: str) -> Any:
    """``seawall ARGS --json`` against ``site``, parsed (it must succeed)."""
    return json.loads(seawall(site, *args, "--json").stdout)


def refused(site: LocalSite, *args: str) -> subprocess.CompletedProcess[str]:
    """``seawall ARGS`` against ``site``, which must fail; its result (stderr, exit code)."""
    result = seawall(site, *args, check=False)
    assert result.returncode != 0, f"seawall {' '.join(args)} should have failed"
    return result
