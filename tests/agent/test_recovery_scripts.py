"""The agent's recovery-script runner, with real shell scripts in a scripts directory.

Exit codes and output come back as they are; a timeout kills the script's whole process
group; only the tail of a long output is kept; a script that cannot start is an answer.
Only scripts of the scripts directory run, owned by root and writable by it only, and as
``--script-user`` when one is set (issue 12: the control API ran any path as root).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from pathlib import Path
from typing import Any

import pytest

from seawall.agent.control.scripts import OUTPUT_GRACE_S, OUTPUT_MAX_BYTES, run_script
from seawall.config import SiteConfig
from seawall.contract.agent import ScriptRun
from seawall.errors import InvalidInput


@pytest.fixture
def config(tmp_path: Path) -> SiteConfig:
    """A site whose scripts directory is made as ``site init`` makes it (0700)."""
    site = SiteConfig(name="dr", site_id="dr-id", data_dir=tmp_path / "data",
                      api_host="127.0.0.1", api_port=7000, replication_host="127.0.0.1",
                      replication_port=7001)
    site.scripts_dir.mkdir(parents=True, mode=0o700)
    return site


def script(config: SiteConfig, body: str, name: str = "script.sh") -> str:
    path = config.scripts_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return name


def run(config: SiteConfig, name: str, timeout_s: float = 10.0,
        **fields: Any) -> dict[str, Any]:
    return asyncio.run(run_script(ScriptRun(path=name, timeout_s=timeout_s, **fields), config))


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for its (re)parent."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def test_success_passes_arguments_and_environment_and_captures_both_streams(
    config: SiteConfig,
) -> None:
    name = script(config, 'echo "out $1 $SEAWALL_STAGE $PWD"\necho err >&2\n')
    outcome = run(config, name, args=["first"], environment={"SEAWALL_STAGE": "pre"})
    assert outcome["exit_code"] == 0 and outcome["error"] is None
    assert not outcome["timed_out"] and 0 <= outcome["duration_s"] < 5
    assert outcome["output"] == "out first pre /\nerr\n"
    assert outcome["output_dropped_bytes"] == 0


def test_failure_gives_its_exit_code_and_output(config: SiteConfig) -> None:
    outcome = run(config, script(config, "echo 'database not stopped'\nexit 3\n"))
    assert outcome["exit_code"] == 3 and outcome["error"] == "exited with code 3"
    assert outcome["output"] == "database not stopped\n"
    killed = run(config, script(config, "kill -TERM $$\n", "self-kill.sh"))
    assert killed["exit_code"] == -15 and killed["error"] == "killed by signal 15"


def test_timeout_kills_the_script_and_its_children(config: SiteConfig, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    name = script(config, f"echo started\nsleep 60 &\necho $! $$ > {pids}\nwait\n")
    started_s = time.monotonic()
    outcome = run(config, name, timeout_s=1.0)
    assert time.monotonic() - started_s < 1.0 + OUTPUT_GRACE_S + 2
    assert outcome["timed_out"] and outcome["exit_code"] == -9
    assert outcome["error"] == "timed out after 1s: killed"
    assert 1.0 <= outcome["duration_s"] < 3 and outcome["output"] == "started\n"
    child, parent = (int(p) for p in pids.read_text().split())
    deadline_s = time.monotonic() + 5
    while not (gone(child) and gone(parent)) and time.monotonic() < deadline_s:
        time.sleep(0.05)
    assert gone(child) and gone(parent)


def test_only_the_tail_of_a_long_output_is_kept(config: SiteConfig) -> None:
    total_bytes = 200 * 1024
    name = script(config, f"head -c {total_bytes - 4} /dev/zero | tr '\\0' x\necho END\n")
    outcome = run(config, name)
    assert outcome["exit_code"] == 0
    assert len(outcome["output"]) == OUTPUT_MAX_BYTES
    assert outcome["output"].endswith("xxEND\n")
    assert outcome["output_dropped_bytes"] == total_bytes - OUTPUT_MAX_BYTES


def test_a_daemon_left_holding_the_output_does_not_hold_the_answer(
    config: SiteConfig, tmp_path: Path,
) -> None:
    pid_file = tmp_path / "daemon.pid"
    name = script(config, f"sleep 30 &\necho $! > {pid_file}\necho launched\n")
    started_s = time.monotonic()
    outcome = run(config, name)
    try:
        assert time.monotonic() - started_s < OUTPUT_GRACE_S + 2
        assert outcome["exit_code"] == 0 and outcome["output"] == "launched\n"
        assert not gone(int(pid_file.read_text()))  # a daemon it started is its business
    finally:
        os.kill(int(pid_file.read_text()), 9)


def test_a_script_that_cannot_start_is_an_answer(config: SiteConfig) -> None:
    name = script(config, "", "no-interpreter.sh")
    (config.scripts_dir / name).write_text("#!/nonexistent/sh\n")
    outcome = run(config, name)
    assert outcome["exit_code"] is None and not outcome["timed_out"]
    assert outcome["error"] == f"cannot run {name}: No such file or directory"
    with pytest.raises(ValueError):
        ScriptRun(path="pre.sh", timeout_s=1, environment={"BAD NAME": "x"})


def test_only_scripts_of_the_scripts_directory_run(config: SiteConfig, tmp_path: Path) -> None:
    """Whoever calls the control API: a path elsewhere is refused, and nothing runs."""
    scripts = config.scripts_dir
    marker = tmp_path / "ran"
    outside = tmp_path / "outside.sh"
    outside.write_text(f"#!/bin/sh\ntouch {marker}\n")
    outside.chmod(0o755)
    (scripts / "link.sh").symlink_to(outside)
    (scripts / "sub").mkdir(mode=0o700)
    script(config, f"touch {marker}\n", "sub/inner.sh")
    refusals = {
        "/usr/bin/id": f"script '/usr/bin/id' is outside {scripts}",  # the request
        str(outside): "is outside",
        "../outside.sh": "give the name of a script in",
        "sub/inner.sh": "give the name of a script in",  # a name, not a relative path
        f"{scripts}/../../outside.sh": "is outside",
        "link.sh": f"script 'link.sh' is outside {scripts}",
        str(scripts): "is the scripts directory",
        "sub": "is not an executable file",
        "missing.sh": f"no script missing.sh in {scripts}",
    }
    for path, message in refusals.items():
        with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
            run(config, path)
    assert not marker.exists()
    assert run(config, f"{scripts}/sub/inner.sh")["exit_code"] == 0  # absolute, inside
    assert marker.exists()


def test_a_script_others_could_change_is_refused(config: SiteConfig) -> None:
    name = script(config, "echo ok\n", "pre.sh")
    path = config.scripts_dir / name
    for mode in (0o775, 0o757):
        path.chmod(mode)
        with pytest.raises(InvalidInput, match="is writable by group or others"):
            run(config, name)
    path.chmod(0o755)
    os.chown(path, 65534, 65534)  # another user's file
    with pytest.raises(InvalidInput, match="belongs to uid 65534: only root's"):
        run(config, name)
    os.chown(path, 0, 0)
    config.scripts_dir.chmod(0o777)  # anyone could swap it
    with pytest.raises(InvalidInput, match=r"the scripts directory .* is writable by group"):
        run(config, name)
    config.scripts_dir.chmod(0o700)
    assert run(config, name)["output"] == "ok\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can run a script as another user")
def test_scripts_run_as_the_script_user_with_no_other_group(config: SiteConfig) -> None:
    nobody = pwd.getpwnam("nobody")
    as_nobody = config.with_overrides(script_user="nobody")
    name = script(config, "id -u; id -g; id -G\n", "who.sh")  # 0755 root's, dir 0700
    assert run(as_nobody, name)["output"].split() == [str(nobody.pw_uid),
                                                     str(nobody.pw_gid), str(nobody.pw_gid)]
    assert run(config, name)["output"].split()[0] == "0"  # without it: the agent's user
