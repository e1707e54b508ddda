"""The stall watchdog (seawall.agent.watchdog): its policy fed by hand, and the process
against a real stand-in agent (a process answering /health on a Unix socket) that is
stopped with SIGSTOP, as a stalled agent would be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seawall.agent.watchdog import SINK_CONNECTIONS_FILE, StallWatch
from support.faultproxy import wait_until


def test_kills_only_with_mirrors_connected_and_silent_for_the_bound() -> None:
    watch = StallWatch(started_s=100.0, stall_kill_s=10)
    assert not watch.should_kill(109.9, sink_connections=1)
    assert watch.should_kill(110.0, sink_connections=1)  # never answered since the watch began
    assert not watch.should_kill(1000.0, sink_connections=0)  # a stall then stops no VM
    watch.answered(111.0)  # it answered again: the clock starts anew
    assert not watch.should_kill(120.9, sink_connections=2)
    assert watch.should_kill(121.0, sink_connections=2)


STAND_IN = textwrap.dedent("""
    import json, socketserver, sys
    from http.server import BaseHTTPRequestHandler

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "agent_id": "a"}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self):
            return "local"

    socketserver.ThreadingUnixStreamServer(sys.argv[1], Health).serve_forever()
""")


@contextmanager
def stand_in_agent(tmp_path: Path, mirrors: int) -> Iterator[tuple[subprocess.Popen[bytes],
                                                                    subprocess.Popen[bytes]]]:
    socket_path = tmp_path / "agent.sock"
    (tmp_path / SINK_CONNECTIONS_FILE).write_text(f"{mirrors}\n")  # as its StallGuard keeps it
    agent = subprocess.Popen([sys.executable, "-c", STAND_IN, str(socket_path)])
    watchdog: subprocess.Popen[bytes] | None = None
    try:
        assert wait_until(socket_path.exists, timeout_s=10)
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "seawall.agent.watchdog", "--pid", str(agent.pid),
             "--socket", str(socket_path), "--stall-kill-s", "1.5"],
            stderr=subprocess.PIPE,
        )
        time.sleep(1.5)  # a first answer
        yield agent, watchdog
    finally:
        for process in (agent, watchdog):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait()


def test_a_stalled_agent_with_mirrors_is_killed_within_the_bound(tmp_path: Path) -> None:
    with stand_in_agent(tmp_path, mirrors=1) as (agent, watchdog):
        os.kill(agent.pid, signal.SIGSTOP)
        stopped_s = time.monotonic()
        assert agent.wait(timeout=15) == -signal.SIGKILL
        # The bound: the stall limit, one probe interval and one probe's timeout, plus slack.
        assert time.monotonic() - stopped_s < 1.5 + 1.0 + 2.0 + 2.0
        assert watchdog.wait(timeout=10) == 0
        assert watchdog.stderr is not None
        assert b"killing it so that its VMs' mirrors end" in watchdog.stderr.read()


def test_a_stalled_agent_without_mirrors_is_left_to_resume(tmp_path: Path) -> None:
    with stand_in_agent(tmp_path, mirrors=0) as (agent, watchdog):
        os.kill(agent.pid, signal.SIGSTOP)
        time.sleep(5)
        assert agent.poll() is None, "an agent with no mirror was killed for a stall"
        os.kill(agent.pid, signal.SIGCONT)
        agent.terminate()
        agent.wait(timeout=10)
        assert watchdog.wait(timeout=10) == 0  # it ends with the agent
        assert watchdog.stderr is not None
        assert b"the agent ended" in watchdog.stderr.read()
