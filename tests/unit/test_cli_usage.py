"""Usage errors of the ``seawall`` command: a short message and exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("args", "message"), [
    (["group", "create"], "Missing argument 'name'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["failover", "live", "app", "--commit-after"], "requires an argument"),
])
def test_usage_errors_exit_2_without_traceback(args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "seawall", *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
