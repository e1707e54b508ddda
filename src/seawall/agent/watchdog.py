"""The stall watchdog: a VM's writes never wait long on a stalled agent.

Why it exists: with the write-blocking mirror, every guest write waits for the capture
sink's acknowledgement. An agent that *dies* closes its NBD socket and QEMU ends the
mirror at once; the guest goes on with no I/O error (checked on these machines). An agent
that *stalls* with its socket open (SIGSTOP, a deadlock, a blocked event loop) holds the
guest's writes until it resumes (seen: one write in 6 s), and neither QEMU 7.2's NBD
client (no request timeout) nor a forced cancel of the job (it cannot interrupt a request
in flight on a live socket) ends that. So a process outside the agent turns a stall into a
death: it kills the agent (SIGKILL ends a stopped process too), the sockets close, QEMU
fails the pending target writes, the mirror jobs end, the guests go on. The agent's
supervisor (``site run``'s keeper, or systemd for ``agent run``) starts it again, and it
resyncs by comparison.

Rules and invariants:
- One watchdog process per agent that has a hypervisor, started by the agent; it ends when
  the agent's process is gone (watched through a pidfd, so a reused pid is never killed).
- Every ``PROBE_INTERVAL_S`` it asks ``GET /health`` on the agent's control socket, each
  probe bounded by ``PROBE_TIMEOUT_S``.
- ``StallWatch`` (pure: no clock, no I/O) decides. It kills only an agent whose last
  answer said it had mirrors attached and which has not answered for ``STALL_KILL_S``
  since: a stalled agent with no mirror stops no VM (and plain volumes, whose I/O it
  serves itself, are better served by an agent that resumes than by one restarted).
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
import time
from dataclasses import dataclass

import httpx

log = logging.getLogger("seawall.watchdog")

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
STALL_KILL_S = 10.0


@dataclass
class StallWatch:
    """When to kill: ``answered`` and ``silent`` are fed the probes' outcomes in order."""

    stall_kill_s: float = STALL_KILL_S
    last_answer_s: float | None = None
    mirrors_attached: int = 0

    def answered(self, now_s: float, mirrors_attached: int) -> None:
        self.last_answer_s = now_s
        self.mirrors_attached = mirrors_attached

    def should_kill(self, now_s: float) -> bool:
        """After a probe that got no answer: has a mirrored agent been silent too long?"""
        if self.last_answer_s is None or self.mirrors_attached == 0:
            return False
        return now_s - self.last_answer_s >= self.stall_kill_s


def watch(agent_pid: int, control_socket: str, stall_kill_s: float = STALL_KILL_S) -> str:
    """Watch until the agent is gone; what ended the watch, for the log."""
    pidfd = os.pidfd_open(agent_pid)
    policy = StallWatch(stall_kill_s)
    client = httpx.Client(transport=httpx.HTTPTransport(uds=control_socket),
                          base_url="http://agent", timeout=PROBE_TIMEOUT_S)
    try:
        while not _gone(pidfd, PROBE_INTERVAL_S):
            now_s = time.monotonic()
            try:
                answer = client.get("/health")
                answer.raise_for_status()
                policy.answered(now_s, int(answer.json().get("mirrors_attached", 0)))
                continue
            except (httpx.HTTPError, ValueError):
                pass
            if policy.should_kill(time.monotonic()):
                silent_s = time.monotonic() - (policy.last_answer_s or 0.0)
                log.error("the agent (pid %d) has not answered for %.1f s with %d mirror(s) "
                          "attached: killing it so that its VMs' mirrors end and their "
                          "writes go on", agent_pid, silent_s, policy.mirrors_attached)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                return "killed a stalled agent"
        return "the agent ended"
    finally:
        client.close()
        os.close(pidfd)


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
    try:
        outcome = watch(arguments.pid, arguments.socket, arguments.stall_kill_s)
    except ProcessLookupError:
        outcome = "the agent had ended before the watch began"
    log.info("watchdog of agent %d: %s", arguments.pid, outcome)


if __name__ == "__main__":
    main()
