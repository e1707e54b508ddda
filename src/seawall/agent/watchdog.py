"""The stall watchdog: a VM's writes never wait long on a stalled agent *process*.

Why it exists: with the write-blocking mirror, every guest write waits for the capture
sink's acknowledgement. An agent that *dies* closes its NBD socket and QEMU ends the
mirror at once; the guest goes on with no I/O error (checked on these machines). An agent
that *stalls* with its socket open holds the guest's writes until it resumes (seen: one
write in 6 s), and neither QEMU 7.2's NBD client (no request timeout) nor a forced cancel
of the job (it cannot interrupt a request in flight on a live socket) ends that. A stalled
event loop is handled inside the agent (``seawall.agent.frontend.stall_guard``: a thread
closes the sink connections); a process stopped or frozen whole (SIGSTOP, a debugger, a
cgroup freeze) runs no thread at all. So a process outside the agent turns such a stall
into a death: it kills the agent (SIGKILL ends a stopped process too), the sockets close,
QEMU fails the pending target writes, the mirror jobs end, the guests go on. The agent's
supervisor (``site run``'s keeper, or systemd for ``agent run``) starts it again.

Rules and invariants:
- One watchdog process per agent that has a hypervisor, started by the agent; it ends when
  the agent's process is gone (watched through a pidfd, so a reused pid is never killed).
- Every ``PROBE_INTERVAL_S`` it asks ``GET /health`` on the agent's control socket, each
  probe bounded by ``PROBE_TIMEOUT_S``.
- ``StallWatch`` (pure: no clock, no I/O) decides. It kills an agent that has not
  answered for ``STALL_KILL_S`` (since its last answer, or since the watch began) while
  QEMU mirrors are connected to its capture sinks: the count the agent's front end keeps in
  ``run/sink-connections`` (``StallGuard``), read from the file because a stopped agent
  answers nothing. A stalled agent with no mirror stops no VM (and plain volumes, whose
  I/O it serves itself, are better served by an agent that resumes than by one restarted).
- The longest a guest write can wait on a stalled sink is therefore about
  ``STALL_KILL_S + PROBE_INTERVAL_S + PROBE_TIMEOUT_S`` (docs/vm-protection.md).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger("seawall.watchdog")

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
STALL_KILL_S = 10.0


SINK_CONNECTIONS_FILE = "sink-connections"
"""In the agent's run dir: how many QEMU mirrors are connected to its sinks now."""


@dataclass
class StallWatch:
    """When to kill: ``answered`` is fed the times of the probes the agent answered."""

    started_s: float
    stall_kill_s: float = STALL_KILL_S
    last_answer_s: float | None = None

    def answered(self, now_s: float) -> None:
        self.last_answer_s = now_s

    def silent_s(self, now_s: float) -> float:
        return now_s - (self.started_s if self.last_answer_s is None else self.last_answer_s)

    def should_kill(self, now_s: float, sink_connections: int) -> bool:
        """After a probe that got no answer: has an agent with mirrors been silent too long?"""
        return sink_connections > 0 and self.silent_s(now_s) >= self.stall_kill_s


def watch(agent_pid: int, control_socket: Path, stall_kill_s: float = STALL_KILL_S) -> str:
    """Watch until the agent is gone; what ended the watch, for the log."""
    pidfd = os.pidfd_open(agent_pid)
    policy = StallWatch(time.monotonic(), stall_kill_s)
    count_path = control_socket.parent / SINK_CONNECTIONS_FILE
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(control_socket)),
                          base_url="http://agent", timeout=PROBE_TIMEOUT_S)
    try:
        while not _gone(pidfd, PROBE_INTERVAL_S):
            try:
                client.get("/health").raise_for_status()
                policy.answered(time.monotonic())
                continue
            except httpx.HTTPError:
                pass
            now_s, connections = time.monotonic(), _sink_connections(count_path)
            if policy.should_kill(now_s, connections):
                log.error("the agent (pid %d) has not answered for %.1f s with %d sink "
                          "connection(s): killing it so that its VMs' mirrors end and their "
                          "writes go on", agent_pid, policy.silent_s(now_s), connections)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                return "killed a stalled agent"
        return "the agent ended"
    finally:
        client.close()
        os.close(pidfd)


def _sink_connections(path: Path) -> int:
    """The agent's count; unknown (no file yet, unreadable) counts as some: kill rather
    than let a guest wait."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 1


def start_watchdog(control_socket: Path) -> subprocess.Popen[bytes]:
    """The watchdog of this process (the agent), as a child process sharing its stderr."""
    return subprocess.Popen([sys.executable, "-m", "seawall.agent.watchdog",
                             "--pid", str(os.getpid()), "--socket", str(control_socket)])


def stop_watchdog(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _gone(pidfd: int, wait_s: float) -> bool:
    """Wait up to ``wait_s``; True once the process has ended (its pidfd is readable)."""
    readable, _, _ = select.select([pidfd], [], [], wait_s)
    return bool(readable)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m seawall.agent.watchdog")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--stall-kill-s", type=float, default=STALL_KILL_S)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(processName)s[%(process)d] %(name)s "
                               "%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per probe
    try:
        outcome = watch(arguments.pid, Path(arguments.socket), arguments.stall_kill_s)
    except ProcessLookupError:
        outcome = "the agent had ended before the watch began"
    log.info("watchdog of agent %d: %s", arguments.pid, outcome)


if __name__ == "__main__":
    main()
