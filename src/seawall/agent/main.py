"""``seawall agent run``: the agent process (data path + control API on a Unix socket).

It runs on uvloop when available, stops cleanly on SIGTERM/SIGINT or ``POST /shutdown``,
and writes its pid to ``run/agent.pid`` so a restarted manager can find it again. With a
metrics address configured it also serves ``/metrics`` on TCP (``seawall.agent.control.metrics``),
and with a control address its control API on TCP over mutual TLS
(``seawall.agent.control.listener``), in the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import uvicorn
import uvloop
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from seawall.agent.control.app import create_control_app
from seawall.agent.control.listener import ControlPins, control_server, pins_router
from seawall.agent.control.metrics import AgentMetrics
from seawall.agent.service import Agent
from seawall.agent.watchdog import start_watchdog, stop_watchdog
from seawall.config import SiteConfig
from seawall.local_access import bind_unix, peer_checked
from seawall.serving import Server, bind_tcp, limited_config

log = logging.getLogger("seawall.agent")


async def serve(config: SiteConfig) -> None:
    config.secure()
    agent = Agent(config)
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, shutdown.set)
    metrics = AgentMetrics(agent)
    metrics_socket = (bind_tcp(config.metrics_host, config.metrics_port, "metrics")
                      if config.metrics_host and config.metrics_port else None)
    pins = ControlPins(config)
    control_socket = (bind_tcp(config.control_host, config.control_port, "control")
                      if config.control_host and config.control_port else None)
    await agent.start()
    control_unix = bind_unix(config.agent_socket)  # 0600, root and our own user only
    app = create_control_app(agent, shutdown, metrics)
    app.include_router(pins_router(pins))
    servers = [Server(
        uvicorn.Config(app, http=peer_checked(AutoHTTPProtocol),
                       log_level="warning", lifespan="off", log_config=None),
        handle_signals=False,
    )]
    if metrics_socket is not None:
        servers.append(Server(limited_config(metrics.listener_app(), lifespan="off"),
                              handle_signals=False))
    pid_path = config.run_dir / "agent.pid"
    pid_path.write_text(f"{os.getpid()}\n")
    tasks = [asyncio.create_task(servers[0].serve(sockets=[control_unix]))]
    # With VMs' mirrors possible, a watchdog outside this process ends a stall of it whole.
    watchdog = start_watchdog(config.agent_socket) if agent.hypervisor is not None else None
    if metrics_socket is not None:
        tasks.append(asyncio.create_task(servers[1].serve(sockets=[metrics_socket])))
        log.info("agent %s serving metrics on http://%s:%d/metrics", config.name,
                 config.metrics_host, config.metrics_port)
    if control_socket is not None:
        servers.append(control_server(app, pins))
        tasks.append(asyncio.create_task(servers[-1].serve(sockets=[control_socket])))
        log.info("agent %s serving its control API (mutual TLS) on %s:%d",
                 config.agent_name or config.name,
                 config.control_host, config.control_port)
    log.info("agent %s serving NBD on %s, replication on %s:%d", config.name,
             config.nbd_socket, config.replication_host, config.replication_port)
    try:
        await shutdown.wait()
    finally:
        log.info("agent stopping")
        if watchdog is not None:
            stop_watchdog(watchdog)
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)
        await agent.stop()
        with contextlib.suppress(FileNotFoundError):
            pid_path.unlink()


def run_agent(config: SiteConfig) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config))
