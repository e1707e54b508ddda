"""The manager's ``AgentApi`` against a real agent's control app, served by uvicorn on a
Unix socket as in production; and the control app's routes against the contract.

- Every route of the control app that the manager calls declares its answer (a model of
  ``seawall.contract.agent`` or ``.vms``) and takes its body as one: a route added
  without a contract fails here.
- ``AgentApi`` reads real answers into the models, maps the agent's errors as before
  (NotFound stays NotFound), and refuses an answer that breaks the contract as a
  ``PeerError`` naming the route (here from a real server that answers the wrong shape).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from seawall.agent.control.app import create_control_app
from seawall.agent.control.metrics import AgentMetrics
from seawall.agent.service import Agent
from seawall.config import SiteConfig
from seawall.contract import agent as contract
from seawall.contract import recovered_vms as recovered_vm_contract
from seawall.contract import vms as vm_contract
from seawall.contract.agent_api import AgentApi
from seawall.errors import NotFound, PeerError
from seawall.http import JsonClient, install_error_handler
from seawall.localsites import free_ports

NOT_THE_MANAGERS = {"/shutdown", "/metrics", "/metrics/snapshot", "/control-pins"}
"""Routes outside this contract: the site runner's stop, metrics scraping and the pins
(``seawall.agent.control.listener``)."""


def site(tmp_path: Path) -> SiteConfig:
    api, replication, peer_api = free_ports(3)
    return SiteConfig.create("prod", tmp_path / "prod", f"127.0.0.1:{api}",
                             f"127.0.0.1:{replication}", peer_api=f"127.0.0.1:{peer_api}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: FastAPI, name: str) -> JsonClient:
        socket = tmp_path / f"{name}.sock"
        server = uvicorn.Server(uvicorn.Config(app, uds=str(socket), log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline_s = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline_s, "uvicorn did not start"
            time.sleep(0.01)
        servers.append((server, thread))
        return JsonClient("http://agent", uds=str(socket), timeout_s=10, what="the agent")

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also those of included routers (FastAPI keeps them nested)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


def test_every_route_the_manager_calls_has_a_contract(tmp_path: Path) -> None:
    agent = Agent(site(tmp_path))
    app = create_control_app(agent, asyncio.Event(), AgentMetrics(agent))
    contract_models = {value for module in (contract, vm_contract, recovered_vm_contract)
                       for value in vars(module).values()
                       if isinstance(value, type) and issubclass(value, BaseModel)}
    missing = []
    routes = list(api_routes(app.routes))
    assert "/coordination/{group_id}/prepare" in {route.path for route in routes}
    for route in routes:
        if route.path in NOT_THE_MANAGERS:
            continue
        answer = route.response_model
        if get_origin(answer) is list:
            [answer] = get_args(answer)
        if answer not in contract_models:
            missing.append(f"{sorted(route.methods)} {route.path}: answers {answer}")
        body = route.body_field
        if body is not None and body.field_info.annotation not in contract_models:
            missing.append(f"{sorted(route.methods)} {route.path}: body outside the contract")
    assert not missing, "\n".join(missing)


def test_agent_api_reads_a_real_agents_answers(tmp_path: Path, serve: Any) -> None:
    agent = Agent(site(tmp_path))
    client = serve(create_control_app(agent, asyncio.Event(), AgentMetrics(agent)), "agent")
    api = AgentApi(client)
    try:
        health = api.health()
        assert health.status == "ok" and health.agent_id == agent.agent_id
        client.post("/volumes", {"name": "vol-a", "size_bytes": 1 << 20})
        [volume] = api.volumes()
        assert (volume.name, volume.size, volume.group) == ("vol-a", 1 << 20, None)
        assert api.exports() == [] and api.failover_tests() == []
        with pytest.raises(NotFound, match="not recovered by this agent"):
            api.group_status("no-such-group")
        with pytest.raises(NotFound, match=re.escape("no export named 'a b?c#d'")):
            api.stop_export("a b?c#d")  # quoted: one unknown name, not a query or fragment
    finally:
        client.close()
        for volume_file in agent.volumes.values():
            volume_file.close()


def test_an_answer_outside_the_contract_is_a_peer_error(serve: Any) -> None:
    wrong = FastAPI()

    @wrong.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}  # no agent_id

    @wrong.get("/groups/{group_id}/checkpoints")
    async def checkpoints(group_id: str) -> list[dict[str, Any]]:
        return [{"id": "first", "time_ns": 1, "name": "", "replicated": True}]

    client = serve(wrong, "wrong")
    api = AgentApi(client)
    try:
        with pytest.raises(PeerError, match=r"GET /health .*agent_id"):
            api.health()
        with pytest.raises(PeerError, match="GET /groups/g1/checkpoints"):
            api.checkpoints("g1")
    finally:
        client.close()


def test_a_request_the_callers_input_does_not_fit_is_invalid_input() -> None:
    """Built on the manager's side, a request model refuses bad input as the agent would
    have (422, InvalidInput), not as a server error."""
    app = FastAPI()
    install_error_handler(app)

    @app.post("/volumes")
    def create(size_bytes: int) -> dict[str, Any]:
        return contract.VolumeCreate(name="vol", size_bytes=size_bytes).model_dump()

    answer = TestClient(app).post("/volumes", params={"size_bytes": 0})
    assert answer.status_code == 422
    assert answer.json()["code"] == "invalid_input"
    assert "size_bytes" in answer.json()["message"]
