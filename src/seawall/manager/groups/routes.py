"""Group, checkpoint and peer-group routes: parse, call ``GroupService``, return."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from seawall.manager.groups.service import GroupService, GroupSettings

router = APIRouter(prefix="/api/v1", tags=["groups"])


class GroupVolume(BaseModel):
    index: int = Field(ge=0, lt=65536)
    name: str
    size_bytes: int = Field(gt=0)


class PeerGroup(BaseModel):
    group_id: str = Field(min_length=1, max_length=36)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    source_site_id: str
    volumes: list[GroupVolume] = Field(min_length=1)
    checkpoint_interval_s: float
    history_s: float
    journal_max_bytes: int | None = None  # absent from older peers
    replica_paths: dict[str, str] = {}  # pre-seeded replicas, by volume name


class CheckpointTag(BaseModel):
    name: str = Field(default="", max_length=512)


def _service(request: Request) -> GroupService:
    service: GroupService = request.app.state.groups
    return service


@router.get("/groups")
def list_groups(request: Request) -> list[dict[str, Any]]:
    return _service(request).list_all()


@router.post("/groups", status_code=201)
def create_group(request: Request, body: GroupSettings) -> dict[str, Any]:
    return _service(request).create(body)


@router.get("/groups/{name}")
def group_status(request: Request, name: str) -> dict[str, Any]:
    return _service(request).status(name)


@router.get("/groups/{name}/checkpoints")
def list_checkpoints(request: Request, name: str) -> list[dict[str, Any]]:
    return _service(request).checkpoints(name)


@router.post("/groups/{name}/checkpoints", status_code=201)
def tag_checkpoint(request: Request, name: str, body: CheckpointTag) -> dict[str, Any]:
    return _service(request).tag(name, body.name)


@router.post("/groups/{name}/resync")
def resync_group(request: Request, name: str) -> dict[str, Any]:
    return _service(request).resync(name)


@router.post("/peer/groups", status_code=201)
def register_peer_group(request: Request, body: PeerGroup) -> dict[str, Any]:
    return _service(request).register_from_peer(body.model_dump())
