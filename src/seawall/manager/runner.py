"""``seawall site run`` / ``seawall manager run``: the processes of a site.

Rules:
- ``site run`` starts the agent as its own process in its own session, so the agent (the
  data path) survives a crash of the manager; a manager started again finds the running
  agent through its control socket and adopts it instead of starting a second one.
- SIGTERM or Ctrl-C stops the manager, then asks the agent to stop and waits for it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import uvicorn

from seawall.config import SiteConfig
from seawall.errors import PeerError, SeawallError
from seawall.manager.app import create_app
from seawall.manager.clients import agent_client
from seawall.serving import Server

log = logging.getLogger("seawall.site")

AGENT_START_TIMEOUT_S = 30.0
AGENT_STOP_TIMEOUT_S = 30.0


def agent_alive(config: SiteConfig) -> bool:
    client = agent_client(config, timeout_s=2.0)
    try:
        client.get("/health")
        return True
    except SeawallError:
        return False
    finally:
        client.close()


def start_agent(config: SiteConfig) -> subprocess.Popen[bytes] | None:
    """Start the site's agent unless one already answers; None when adopted."""
    if agent_alive(config):
        log.info("adopting the running agent of site %s", config.name)
        return None
    process = subprocess.Popen(
        [sys.executable, "-m", "seawall", "agent", "run", "--data", str(config.data_dir)],
        start_new_session=True,
    )
    deadline = time.monotonic() + AGENT_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerError(f"the agent exited at start with status {process.returncode}")
        if agent_alive(config):
            return process
        time.sleep(0.1)
    process.kill()
    raise PeerError("the agent did not come up in time")


def stop_agent(config: SiteConfig, process: subprocess.Popen[bytes] | None) -> None:
    pid_path = config.run_dir / "agent.pid"
    pid = process.pid if process else (int(pid_path.read_text()) if pid_path.exists() else None)
    client = agent_client(config, timeout_s=5.0)
    try:
        client.post("/shutdown")
    except SeawallError:
        if pid is not None:
            _signal(pid, signal.SIGTERM)
    finally:
        client.close()
    if process is not None:
        try:
            process.wait(AGENT_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("agent did not stop in %.0f s: killing it", AGENT_STOP_TIMEOUT_S)
            process.kill()
            process.wait()
    elif pid is not None:
        deadline = time.monotonic() + AGENT_STOP_TIMEOUT_S
        while time.monotonic() < deadline and _signal(pid, 0):
            time.sleep(0.1)


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False


def run_manager(config: SiteConfig) -> None:
    server = Server(uvicorn.Config(create_app(config), host=config.api_host,
                                   port=config.api_port, log_level="warning"),
                    handle_signals=True)
    log.info("site manager %s listening on %s", config.name, config.api_url)
    server.run()


def run_site(config: SiteConfig) -> None:
    process = start_agent(config)
    try:
        run_manager(config)
    finally:
        log.info("stopping the agent")
        stop_agent(config, process)
