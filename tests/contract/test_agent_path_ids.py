"""Routes of the agent's control API whose path names a group check the body against it.

Driven through the real control app (FastAPI's TestClient over the ASGI app of a real
``Agent`` on a real site directory): a body about another group is refused as
InvalidInput and changes nothing (no state saved, nothing protected or recovered); a body
about the path's group gets past the check to the agent (which then refuses it for its
own reason, so no group starts in the test's loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from seawall.agent.control.app import create_control_app
from seawall.agent.control.metrics import AgentMetrics
from seawall.agent.service import Agent
from seawall.config import SiteConfig
from seawall.contract.agent import GroupVolume, ProtectionSpec, RecoverySpec, dump
from seawall.localsites import free_ports


@pytest.fixture
def control(tmp_path: Path) -> Iterator[tuple[Agent, TestClient]]:
    api, replication, peer_api = free_ports(3)
    config = SiteConfig.create("prod", tmp_path / "prod", f"127.0.0.1:{api}",
                               f"127.0.0.1:{replication}", peer_api=f"127.0.0.1:{peer_api}")
    agent = Agent(config)
    app = create_control_app(agent, asyncio.Event(), AgentMetrics(agent))
    with TestClient(app) as client:
        yield agent, client


VOLUMES = [GroupVolume(index=0, name="vol-a", size_bytes=1 << 20)]


def protection(group_id: str) -> dict[str, Any]:
    return dump(ProtectionSpec(group_id=group_id, name="g", volumes=VOLUMES,
                               target_host="127.0.0.1", target_port=1))


def recovery(group_id: str, **extra: Any) -> dict[str, Any]:
    return dump(RecoverySpec(group_id=group_id, name="g", source_site="s", volumes=VOLUMES,
                             **extra))


@pytest.mark.parametrize(("method", "path", "body"), [
    ("PUT", "/protected/g-path", protection("g-body")),
    ("PUT", "/recovering/g-path", recovery("g-body")),
    ("POST", "/groups/g-path/reverse", recovery("g-body")),
])
def test_a_body_about_another_group_is_refused_and_changes_nothing(
        control: tuple[Agent, TestClient], method: str, path: str, body: dict[str, Any],
) -> None:
    agent, client = control
    state_file = agent.config.agent_dir / "state.json"
    saved = state_file.read_bytes() if state_file.exists() else None
    answer = client.request(method, path, json=body)
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["code"] == "invalid_input"
    assert "g-path" in answer.json()["message"] and "g-body" in answer.json()["message"]
    assert not agent.protected and not agent.recovering
    assert agent.state.protected == [] and agent.state.recovering == []
    assert (state_file.read_bytes() if state_file.exists() else None) == saved


@pytest.mark.parametrize(("method", "path", "body", "status", "refusal"), [
    ("PUT", "/protected/g1", protection("g1"), 404, "no volume named 'vol-a'"),
    ("PUT", "/recovering/g1", recovery("g1", replica_paths={"other": "/nowhere"}), 400,
     "pre-seed for 'other', which is not in the group"),
    ("POST", "/groups/g1/reverse", recovery("g1"), 404, "group g is not protected"),
])
def test_a_body_about_the_paths_group_reaches_the_agent(
        control: tuple[Agent, TestClient], method: str, path: str, body: dict[str, Any],
        status: int, refusal: str,
) -> None:
    _, client = control
    answer = client.request(method, path, json=body)
    assert answer.status_code == status, answer.text
    assert refusal in answer.json()["message"]
    assert "the path names" not in answer.json()["message"]
