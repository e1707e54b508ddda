"""Recovery scripts, run on this host for the site manager: a name, arguments, a timeout.

Rules:
- Only scripts of the site's scripts directory run (``site init --scripts-dir``, default
  ``DATA/scripts``, root's, 0700): the request names one (``pre.sh``), or gives an
  absolute path that resolves inside it; anything else (``..``, a symlink out, another
  path) is refused (``InvalidInput``) whoever asks. The protected site only names it.
- The script is opened without following a symlink (``seawall.confined``) and checked
  on that descriptor: a regular, executable file owned by root or by the agent's user,
  writable by its owner only, in a directory likewise; it is that very file that runs
  (exec'd through ``/proc/self/fd``), not whatever the path names by then.
- With ``site init --script-user USER`` and an agent running as root, the script runs as
  USER with its primary group and no other (then it must be readable by USER: 0755);
  without it, as the agent's user (see the README on why root is the default).
- The script is exec'd (no shell) with stdin from /dev/null, working directory ``/``, the
  agent's environment plus the request's variables, in a session of its own: on timeout
  the whole process group is killed (SIGKILL), so children it started die with it.
- stdout and stderr go to one pipe (interleaved as written); only the last
  ``OUTPUT_MAX_BYTES`` are kept, and the answer says how many bytes were dropped.
- The script's end is its own exit: output is read for at most ``OUTPUT_GRACE_S`` more,
  so a daemon it left running (holding the pipe) does not hold the answer back.
- Every outcome is an answer, not an error: exit code (negative: killed by that signal),
  ``timed_out``, ``duration_s``, ``output``, and ``error`` when it could not be started.
  A request for a script that is not there or fails the checks is refused as
  ``InvalidInput``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import stat
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from seawall.config import SiteConfig
from seawall.confined import inside, open_directory
from seawall.contract.agent import ScriptOutcome, ScriptRun
from seawall.errors import InvalidInput

OUTPUT_MAX_BYTES = 64 * 1024
OUTPUT_GRACE_S = 1.0
READ_CHUNK_BYTES = 16 * 1024
class _Tail:
    """The last ``limit`` bytes written, and how many came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped_bytes = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.dropped_bytes += excess


async def _drain(stream: asyncio.StreamReader, tail: _Tail) -> None:
    while chunk := await stream.read(READ_CHUNK_BYTES):
        tail.add(chunk)


def _check_owner(what: str, status: os.stat_result) -> None:
    if status.st_uid not in (0, os.geteuid()):
        raise InvalidInput(f"{what} belongs to uid {status.st_uid}: only root's (or the "
                           "agent's user's) scripts run")
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InvalidInput(f"{what} is writable by group or others "
                           f"({stat.filemode(status.st_mode)}): chmod go-w it")


def open_script(scripts_dir: Path, text: str) -> int:
    """The script ``text`` names in ``scripts_dir``, opened and checked (the module's
    rules); the caller closes the descriptor."""
    root = scripts_dir.resolve()
    if not text.startswith("/") and "/" in text:
        raise InvalidInput(f"script {text!r}: give the name of a script in {root} "
                           "(e.g. pre.sh), or its absolute path there")
    relative = inside(root, text, "script").relative_to(root)
    if not relative.parts:
        raise InvalidInput(f"script {text!r} is the scripts directory {root}, not a script in it")
    try:
        directory_fd = open_directory(root, relative.parent, create=False)
    except FileNotFoundError:
        raise InvalidInput(f"no scripts directory {root} at the recovery site") from None
    try:
        _check_owner(f"the scripts directory {root / relative.parent}", os.fstat(directory_fd))
        fd = os.open(relative.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=directory_fd)
    except FileNotFoundError:
        raise InvalidInput(f"no script {relative} in {root} at the recovery site") from None
    finally:
        os.close(directory_fd)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode) or not status.st_mode & 0o111:
            raise InvalidInput(f"script {root / relative} is not an executable file")
        _check_owner(f"script {root / relative}", status)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _as_user(script_user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that drop to ``script_user`` (only root can)."""
    if script_user is None or os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(script_user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


async def run_script(request: ScriptRun, config: SiteConfig,
                     output_max_bytes: int = OUTPUT_MAX_BYTES) -> dict[str, Any]:
    """Run the script to its end or its timeout; its outcome (see the module's rules)."""
    script_fd = open_script(config.scripts_dir, request.path)
    try:
        return await _run(request, script_fd, _as_user(config.script_user), output_max_bytes)
    finally:
        os.close(script_fd)


async def _run(request: ScriptRun, script_fd: int, as_user: dict[str, Any],
               output_max_bytes: int) -> dict[str, Any]:
    started_s = time.monotonic()
    outcome: dict[str, Any] = {"path": request.path, "exit_code": None, "timed_out": False,
                               "duration_s": 0.0, "output": "", "output_dropped_bytes": 0,
                               "error": None}
    # Our own pipe, not asyncio's: a Process with pipes waits for them to close, which a
    # daemon the script left behind would put off until it ends.
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            f"/proc/self/fd/{script_fd}", *request.args, stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd, stderr=write_fd, cwd="/",
            env={**os.environ, **request.environment}, start_new_session=True,
            pass_fds=(script_fd,), **as_user)
    except OSError as exc:
        os.close(read_fd)
        outcome["error"] = f"cannot run {request.path}: {exc.strerror or exc}"
        return outcome
    finally:
        os.close(write_fd)
    tail = _Tail(output_max_bytes)
    stream = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(read_fd, "rb", buffering=0))
    reader = asyncio.create_task(_drain(stream, tail))
    try:
        await asyncio.wait_for(process.wait(), request.timeout_s)
    except TimeoutError:
        outcome["timed_out"] = True
        with contextlib.suppress(ProcessLookupError):  # it may have just ended
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    outcome["duration_s"] = round(time.monotonic() - started_s, 3)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(reader), OUTPUT_GRACE_S)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    transport.close()
    code = process.returncode
    assert code is not None  # waited for
    outcome["exit_code"] = code
    outcome["output"] = bytes(tail.data).decode(errors="replace")
    outcome["output_dropped_bytes"] = tail.dropped_bytes
    if outcome["timed_out"]:
        outcome["error"] = f"timed out after {request.timeout_s:g}s: killed"
    elif code != 0:
        outcome["error"] = f"exited with code {code}" if code > 0 else f"killed by signal {-code}"
    return outcome


def scripts_router(config: SiteConfig) -> APIRouter:
    router = APIRouter()

    @router.post("/scripts/run", response_model=ScriptOutcome)
    async def run(body: ScriptRun) -> dict[str, Any]:
        return await run_script(body, config)

    return router
