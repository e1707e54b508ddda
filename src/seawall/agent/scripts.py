"""Recovery scripts, run on this host for the site manager: a path, arguments, a timeout.

Rules:
- The script is exec'd (no shell) with stdin from /dev/null, working directory ``/``, the
  agent's environment plus the request's variables, in a session of its own: on timeout
  the whole process group is killed (SIGKILL), so children it started die with it.
- stdout and stderr go to one pipe (interleaved as written); only the last
  ``OUTPUT_MAX_BYTES`` are kept, and the answer says how many bytes were dropped.
- The script's end is its own exit: output is read for at most ``OUTPUT_GRACE_S`` more,
  so a daemon it left running (holding the pipe) does not hold the answer back.
- Every outcome is an answer, not an error: exit code (negative: killed by that signal),
  ``timed_out``, ``duration_s``, ``output``, and ``error`` when it could not be started.
  Only a malformed request (a relative path) is refused, as ``InvalidInput``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints

from seawall.errors import InvalidInput

OUTPUT_MAX_BYTES = 64 * 1024
OUTPUT_GRACE_S = 1.0
READ_CHUNK_BYTES = 16 * 1024
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class ScriptRun(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    args: list[str] = Field(default=[], max_length=64)
    environment: dict[EnvName, str] = Field(default={}, max_length=64)
    timeout_s: float = Field(gt=0, le=3600)


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


async def run_script(request: ScriptRun, output_max_bytes: int = OUTPUT_MAX_BYTES,
                     ) -> dict[str, Any]:
    """Run the script to its end or its timeout; its outcome (see the module's rules)."""
    if not request.path.startswith("/"):
        raise InvalidInput(f"script {request.path!r} must be an absolute path")
    started_s = time.monotonic()
    outcome: dict[str, Any] = {"path": request.path, "exit_code": None, "timed_out": False,
                               "duration_s": 0.0, "output": "", "output_dropped_bytes": 0,
                               "error": None}
    # Our own pipe, not asyncio's: a Process with pipes waits for them to close, which a
    # daemon the script left behind would put off until it ends.
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            request.path, *request.args, stdin=asyncio.subprocess.DEVNULL, stdout=write_fd,
            stderr=write_fd, cwd="/", env={**os.environ, **request.environment},
            start_new_session=True)
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


def scripts_router() -> APIRouter:
    router = APIRouter()

    @router.post("/scripts/run")
    async def run(body: ScriptRun) -> dict[str, Any]:
        return await run_script(body)

    return router
