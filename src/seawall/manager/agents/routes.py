"""Agent routes: parse, call ``AgentDirectory``, return.

``POST /api/v1/agents/join`` takes no user token: the single-use join token in the body is
the credential (``access.policy``: ``AGENT_JOIN``), as the pairing handshake's is.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from seawall.join_tokens import DEFAULT_TTL_S, MAX_TTL_S, TOKEN_MAX_CHARS
from seawall.manager.agents.directory import AgentDirectory
from seawall.tls import CERT_PEM_MAX_CHARS

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class TokenRequest(BaseModel):
    ttl_s: float = Field(default=DEFAULT_TTL_S, gt=0, le=MAX_TTL_S)


class JoinRequest(BaseModel):
    token: str = Field(min_length=1, max_length=TOKEN_MAX_CHARS)
    name: str = Field(pattern=NAME_PATTERN)
    agent_id: str = Field(min_length=36, max_length=36)
    control_url: str = Field(min_length=1, max_length=256)
    cert_pem: str = Field(min_length=1, max_length=CERT_PEM_MAX_CHARS)


def _directory(request: Request) -> AgentDirectory:
    directory: AgentDirectory = request.app.state.agents
    return directory


@router.get("")
def list_agents(request: Request) -> list[dict[str, Any]]:
    return _directory(request).list_with_status()


@router.post("/token", status_code=201)
def new_token(request: Request, body: TokenRequest) -> dict[str, Any]:
    return _directory(request).new_token(body.ttl_s)


@router.post("/join", status_code=201)
def join(request: Request, body: JoinRequest) -> dict[str, Any]:
    return _directory(request).join(body.token, body.name, body.agent_id, body.control_url,
                                    body.cert_pem)


@router.delete("/{name}")
def remove(request: Request, name: str) -> dict[str, Any]:
    return _directory(request).remove(name)
