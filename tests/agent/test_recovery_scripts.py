"""The agent's recovery-script runner, with real shell scripts in tmp_path.

Exit codes and output come back as they are; a timeout kills the script's whole process
group; only the tail of a long output is kept; a script that cannot start is an answer.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from seawall.agent.scripts import OUTPUT_GRACE_S, OUTPUT_MAX_BYTES, ScriptRun, run_script
from seawall.errors import InvalidInput


def script(tmp_path: Path, body: str, name: str = "script.sh") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def run(path: str, timeout_s: float = 10.0, **fields: Any) -> dict[str, Any]:
    return asyncio.run(run_script(ScriptRun(path=path, timeout_s=timeout_s, **fields)))


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for its (re)parent."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def test_success_passes_arguments_and_environment_and_captures_both_streams(
    tmp_path: Path,
) -> None:
    path = script(tmp_path, 'echo "out $1 $SEAWALL_STAGE $PWD"\necho err >&2\n')
    outcome = run(path, args=["first"], environment={"SEAWALL_STAGE": "pre"})
    assert outcome["exit_code"] == 0 and outcome["error"] is None
    assert not outcome["timed_out"] and 0 <= outcome["duration_s"] < 5
    assert outcome["output"] == "out first pre /\nerr\n"
    assert outcome["output_dropped_bytes"] == 0


def test_failure_gives_its_exit_code_and_output(tmp_path: Path) -> None:
    outcome = run(script(tmp_path, "echo 'database not stopped'\nexit 3\n"))
    assert outcome["exit_code"] == 3 and outcome["error"] == "exited with code 3"
    assert outcome["output"] == "database not stopped\n"
    killed = run(script(tmp_path, "kill -TERM $$\n", "self-kill.sh"))
    assert killed["exit_code"] == -15 and killed["error"] == "killed by signal 15"


def test_timeout_kills_the_script_and_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    path = script(tmp_path, f"echo started\nsleep 60 &\necho $! $$ > {pids}\nwait\n")
    started_s = time.monotonic()
    outcome = run(path, timeout_s=1.0)
    assert time.monotonic() - started_s < 1.0 + OUTPUT_GRACE_S + 2
    assert outcome["timed_out"] and outcome["exit_code"] == -9
    assert outcome["error"] == "timed out after 1s: killed"
    assert 1.0 <= outcome["duration_s"] < 3 and outcome["output"] == "started\n"
    child, parent = (int(p) for p in pids.read_text().split())
    deadline_s = time.monotonic() + 5
    while not (gone(child) and gone(parent)) and time.monotonic() < deadline_s:
        time.sleep(0.05)
    assert gone(child) and gone(parent)


def test_only_the_tail_of_a_long_output_is_kept(tmp_path: Path) -> None:
    total_bytes = 200 * 1024
    path = script(tmp_path, f"head -c {total_bytes - 4} /dev/zero | tr '\\0' x\necho END\n")
    outcome = run(path)
    assert outcome["exit_code"] == 0
    assert len(outcome["output"]) == OUTPUT_MAX_BYTES
    assert outcome["output"].endswith("xxEND\n")
    assert outcome["output_dropped_bytes"] == total_bytes - OUTPUT_MAX_BYTES


def test_a_daemon_left_holding_the_output_does_not_hold_the_answer(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    path = script(tmp_path, f"sleep 30 &\necho $! > {pid_file}\necho launched\n")
    started_s = time.monotonic()
    outcome = run(path)
    try:
        assert time.monotonic() - started_s < OUTPUT_GRACE_S + 2
        assert outcome["exit_code"] == 0 and outcome["output"] == "launched\n"
        assert not gone(int(pid_file.read_text()))  # a daemon it started is its business
    finally:
        os.kill(int(pid_file.read_text()), 9)


def test_a_script_that_cannot_start_is_an_answer_and_a_relative_path_refused(
    tmp_path: Path,
) -> None:
    not_executable = tmp_path / "plain.sh"
    not_executable.write_text("#!/bin/sh\n")
    outcome = run(str(not_executable))
    assert outcome["exit_code"] is None and not outcome["timed_out"]
    assert outcome["error"] == f"cannot run {not_executable}: Permission denied"
    missing = run(str(tmp_path / "missing.sh"))
    assert missing["error"] == f"cannot run {tmp_path / 'missing.sh'}: No such file or directory"
    with pytest.raises(InvalidInput, match="must be an absolute path"):
        run("pre.sh")
    with pytest.raises(ValueError):
        ScriptRun(path="/bin/true", timeout_s=1, environment={"BAD NAME": "x"})
