"""A guest must not wait on a stalled agent: close the sinks' connections when the loop stalls.

QEMU's write-blocking mirror makes every guest write wait for the sink's reply, and QEMU
7.2's NBD client has no request timeout: an agent whose event loop stops answering (a long
synchronous call, an fsync on a slow disk, the host swapping) would stall the guest's
writes for as long. A thread of the agent's own watches the loop and, once it has not
ticked for ``stall_s``, shuts the guarded connections' sockets down: QEMU then sees the
connection gone, fails the one write in flight to the sink (never to the guest:
``on-target-error: report`` ends the job), and the guest goes on.

Rules and invariants:
- Guarded are the connections to a backend with ``stall_guarded = True`` (capture sinks);
  the front end registers each when it selects its export, with a *duplicate* of its
  socket's descriptor, closed when the connection ends: the number the thread shuts down
  can never belong to another socket meanwhile.
- ``shutdown(SHUT_RDWR)`` is the only thing the thread does to a socket (safe from any
  thread); the loop then sees the connection lost and cleans up as for any client that
  went away. A stall of ``stall_s`` or more therefore costs the group its mirrors (it turns
  ``sync-required`` and copies the disks again).
- The worst a guest write waits on a stalled agent is ``stall_s`` plus the watch interval,
  as long as the process runs threads at all: a process that is stopped (SIGSTOP) or
  frozen whole is not covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

STALL_S = 5.0
"""How long the loop may not tick before the guarded connections are closed."""
TICK_S = 0.25


class StallGuard:
    def __init__(self, stall_s: float = STALL_S, count_path: Path | None = None) -> None:
        """``count_path``: a file kept holding the number of guarded connections, for the
        watchdog outside the process (``seawall.agent.watchdog``), which reads it whatever
        state this process is in."""
        self.stall_s = stall_s
        self.count_path = count_path
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}  # id of the connection -> its duplicated descriptor
        self._beat_s = time.monotonic()
        self._stop = threading.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:  # what a previous process of the agent left there is stale
            self._publish_count()
        self._ticker = asyncio.create_task(self._tick())
        self._thread = threading.Thread(target=self._watch, name="sink-stall-guard",
                                        daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    @property
    def guarded_connections(self) -> int:
        """Connections to capture sinks now open: QEMU mirrors that wait on this agent."""
        with self._lock:
            return len(self._fds)

    def guard(self, key: int, fd: int) -> None:
        with self._lock:
            self._fds[key] = os.dup(fd)
            self._publish_count()

    def release(self, key: int) -> None:
        with self._lock:
            fd = self._fds.pop(key, None)
            self._publish_count()
        if fd is not None:
            os.close(fd)

    def _publish_count(self) -> None:
        # Runtime state, not data: replaced whole (never read half-written), no fsync.
        if self.count_path is None:
            return
        tmp = self.count_path.with_name(f".{self.count_path.name}.tmp")
        tmp.write_text(f"{len(self._fds)}\n")
        os.replace(tmp, self.count_path)

    async def _tick(self) -> None:
        while True:
            self._beat_s = time.monotonic()
            await asyncio.sleep(TICK_S)

    def _watch(self) -> None:
        while not self._stop.wait(TICK_S):
            stalled_s = time.monotonic() - self._beat_s
            if stalled_s < self.stall_s:
                continue
            with self._lock:  # held: release() cannot close a descriptor meanwhile
                fds = list(self._fds.values())
                for fd in fds:
                    with contextlib.suppress(OSError):  # the peer closed it already
                        socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_RDWR)
            if fds:
                log.error("the agent's event loop has not run for %.1f s: closed %d sink "
                          "connections so that no guest waits on it (their mirrors end)",
                          stalled_s, len(fds))
                self._beat_s = time.monotonic()  # once per stall
