"""An agent of "another host" in tests: its own directory, ports and process.

It runs ``seawall agent run`` as an operator would on a second machine; on this one the
directory and the ports are what keep it apart from the site's own agent.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from seawall.localsites import LocalSite, free_ports, stop_process

START_TIMEOUT_S = 60.0


class Host:
    def __init__(self, name: str, directory: Path, log: TextIO) -> None:
        self.name = name
        self.directory = directory
        self.log = log
        self.control, self.replication, self.nbd = free_ports(3)
        self.process: subprocess.Popen[bytes] | None = None

    def run(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "seawall", "agent", "run", "--data", str(self.directory),
             *args], stdout=self.log, stderr=self.log)

    def join_args(self, site: LocalSite, token: str) -> list[str]:
        return ["--manager", site.url, "--token", token, "--name", self.name,
                "--control", f"127.0.0.1:{self.control}",
                "--replication", f"127.0.0.1:{self.replication}",
                "--nbd-tcp", f"127.0.0.1:{self.nbd}"]

    def client_certificates(self, out: Path) -> Path:
        """A client certificate of this agent's NBD CA in ``out`` (``volume client-cert``),
        as an operator makes one on the agent's host, for its ``nbds://`` URIs."""
        subprocess.run([sys.executable, "-m", "seawall", "volume", "client-cert", "tests",
                        "--out", str(out), "--data", str(self.directory)],
                       check=True, capture_output=True, timeout=60)
        return out

    def join(self, site: LocalSite) -> None:
        """Join ``site`` with a new token and wait until the site reaches this agent."""
        token = site.api.post("/api/v1/agents/token", {})["token"]
        self.run(*self.join_args(site, token))
        self.wait_reachable(site)

    def wait_reachable(self, site: LocalSite) -> None:
        assert self.process is not None, "run() first"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (
                f"agent {self.name} exited with {self.process.returncode}")
            if any(a["name"] == self.name and a["reachable"]
                   for a in site.api.get("/api/v1/agents")):
                return
            time.sleep(0.1)
        raise AssertionError(f"agent {self.name} not reachable in {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
