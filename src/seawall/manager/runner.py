"""``seawall site run`` / ``seawall manager run``: the processes of a site.

Rules:
- ``site run`` starts the agent as its own process in its own session, so the agent (the
  data path) survives a crash of the manager; a manager started again finds the running
  agent through its control socket and adopts it instead of starting a second one.
- The manager serves its API and, in the same event loop, its peer API for paired managers
  (``seawall.manager.peer_listener``); one stopping stops the other. The API speaks TLS
  (``seawall.api_tls``) unless the site is ``--insecure-http`` (loopback only); SIGHUP
  reloads its certificate and key from their files, without stopping the server.
- SIGTERM or Ctrl-C stops the manager, then asks the agent to stop and waits for it.
- While the site runs, an agent that stops is started again (``AgentKeeper``).
- Start-up overlaps: the agent process is spawned first, the manager imports and builds
  its app meanwhile (the manager's modules are imported only then, not with this one),
  and the API serves once the agent answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from seawall.config import SiteConfig
from seawall.errors import PeerError, SeawallError
from seawall.manager.agent_keeper import AgentKeeper
from seawall.manager.clients import agent_client

if TYPE_CHECKING:
    from seawall.api_tls import ApiTls

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
    """Start the site's agent unless one already answers; None when adopted.

    Does not wait for it: ``wait_for_agent`` does."""
    if agent_alive(config):
        log.info("adopting the running agent of site %s", config.name)
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "seawall", "agent", "run", "--data", str(config.data_dir)],
        start_new_session=True,
    )


def wait_for_agent(config: SiteConfig, process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    deadline = time.monotonic() + AGENT_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerError(f"the agent exited at start with status {process.returncode}")
        if agent_alive(config):
            return
        time.sleep(0.05)
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


def run_manager(config: SiteConfig, before_serving: Callable[[], None] | None = None) -> None:
    from seawall.manager.app import create_app
    from seawall.manager.peer_listener import peer_server, serve_with_peer_api
    from seawall.serving import Server, limited_config

    config.secure()
    app = create_app(config)
    api_tls: ApiTls | None = app.state.api_tls
    tls_settings: dict[str, Any] = {} if api_tls is None else {
        "ssl_context_factory": lambda _config, _default: api_tls.context}
    server = Server(limited_config(app, host=config.api_host, port=config.api_port,
                                   **tls_settings), handle_signals=True)
    peer = peer_server(app, config, app.state.sites.peer_tls.context)
    if before_serving is not None:
        before_serving()
    if api_tls is None:
        log.warning("site manager %s serves its API in plain HTTP on %s (--insecure-http: "
                    "this host's users only)", config.name, config.api_url)
    else:
        log.info("API certificate %s: fingerprint (sha256) %s", api_tls.cert_path,
                 api_tls.fingerprint)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: api_tls.reload())
    log.info("site manager %s listening on %s, peer API (mutual TLS) on %s", config.name,
             config.api_url, config.peer_api_url)
    asyncio.run(serve_with_peer_api(server, peer))


def run_site(config: SiteConfig) -> None:
    process = start_agent(config)
    keeper = AgentKeeper(config, process, lambda: _started(config))

    def before_serving() -> None:
        wait_for_agent(config, process)
        keeper.start()

    try:
        run_manager(config, before_serving)
    finally:
        keeper.stop()
        log.info("stopping the agent")
        stop_agent(config, keeper.process)


def _started(config: SiteConfig) -> subprocess.Popen[bytes] | None:
    process = start_agent(config)
    wait_for_agent(config, process)
    return process
