"""Group, checkpoint and peer-group routes: parse, call ``GroupService``, return."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from seawall.contract.agent import fence_request
from seawall.manager.access.guard import peer_site
from seawall.manager.groups.reverse import ReverseProtection
from seawall.manager.groups.service import GroupService, GroupSettings
from seawall.manager.groups.settings import GroupOptions
from seawall.manager.groups.vm_groups import VmGroups

router = APIRouter(prefix="/api/v1", tags=["groups"])


class GroupVolume(BaseModel):
    index: int = Field(ge=0, lt=65536)
    name: str
    size_bytes: int = Field(gt=0)
    # Where a spanning group's volume lives (``groups.members``); absent otherwise.
    agent: str | None = Field(default=None, max_length=64)
    member: str | None = Field(default=None, max_length=64)
    member_index: int | None = Field(default=None, ge=0, lt=65536)


class PeerMember(BaseModel):
    """A member stream of a spanning group: the recovery site journals it apart."""

    group_id: str = Field(min_length=1, max_length=64)
    agent: str = Field(min_length=1, max_length=64)
    volumes: list[GroupVolume] = Field(min_length=1)
    cert_pem: str = Field(min_length=1, max_length=8192)


class PeerGroup(BaseModel):
    group_id: str = Field(min_length=1, max_length=36)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    volumes: list[GroupVolume] = Field(min_length=1)
    checkpoint_interval_s: float
    history_s: float
    journal_max_bytes: int | None = None  # absent from older peers
    replica_paths: dict[str, str] = {}  # pre-seeded replicas, by volume name
    settings: GroupOptions | None = None  # every setting; absent from older peers
    members: list[PeerMember] = []  # a group spanning agents: its member streams


class CheckpointTag(BaseModel):
    name: str = Field(default="", max_length=512)
    quiesce: bool = False  # freeze the guests around it (``--quiesce``)


def _service(request: Request) -> GroupService:
    service: GroupService = request.app.state.groups
    return service


@router.get("/groups")
def list_groups(request: Request) -> list[dict[str, Any]]:
    return _service(request).list_all()


@router.post("/groups", status_code=201)
def create_group(request: Request, body: GroupSettings) -> dict[str, Any]:
    vm_groups: VmGroups = request.app.state.vm_groups  # waits for the VMs' mirrors
    return vm_groups.create(body)


@router.get("/groups/{name}")
def group_status(request: Request, name: str) -> dict[str, Any]:
    return _service(request).status(name)


@router.get("/groups/{name}/checkpoints")
def list_checkpoints(request: Request, name: str) -> list[dict[str, Any]]:
    return _service(request).checkpoints(name)


@router.post("/groups/{name}/checkpoints", status_code=201)
def tag_checkpoint(request: Request, name: str, body: CheckpointTag) -> dict[str, Any]:
    return _service(request).tag(name, body.name, body.quiesce)


@router.post("/groups/{name}/resync")
def resync_group(request: Request, name: str) -> dict[str, Any]:
    return _service(request).resync(name)


@router.post("/peer/groups", status_code=201)
def register_peer_group(request: Request, body: PeerGroup) -> dict[str, Any]:
    spec = body.model_dump()
    # A one-agent group's volumes keep their old shape: no empty placement keys.
    spec["volumes"] = [volume.model_dump(exclude_none=True) for volume in body.volumes]
    return _service(request).register_from_peer(peer_site(request), spec)


class PeerAction(BaseModel):
    """A tag or resync asked of the recovery site, forwarded by it to the protected site."""

    name: str = Field(default="", max_length=512)
    quiesce: bool = False
    shutdown_timeout_s: float | None = Field(default=None, gt=0, le=86400)
    """A fence: shut the group's VMs down first (``FenceRequest``)."""


@router.post("/peer/groups/{name}/checkpoints", status_code=201)
def peer_tag_checkpoint(request: Request, name: str, body: PeerAction) -> dict[str, Any]:
    return _service(request).forwarded(name, "checkpoints", peer_site(request),
                                       {"name": body.name, "quiesce": body.quiesce})


@router.get("/peer/groups/{name}/checkpoints")
def peer_list_checkpoints(request: Request, name: str,
                          newest: bool = False) -> list[dict[str, Any]]:
    """A spanning group's checkpoints, as offered here (asked by its protected site);
    ``newest``: the newest one only."""
    return _service(request).checkpoints_for_peer(name, peer_site(request), newest)


@router.post("/peer/groups/{name}/resync")
def peer_resync_group(request: Request, name: str, body: PeerAction) -> dict[str, Any]:
    return _service(request).forwarded(name, "resync", peer_site(request), {})


@router.post("/peer/groups/{name}/fence")
def peer_fence_group(request: Request, name: str, body: PeerAction) -> dict[str, Any]:
    """Stop the group's writes and ship up to a final checkpoint named ``name``."""
    return _service(request).forwarded(
        name, "fence", peer_site(request),
        fence_request(body.name, body.shutdown_timeout_s).model_dump())


@router.post("/peer/groups/{name}/unfence")
def peer_unfence_group(request: Request, name: str, body: PeerAction) -> dict[str, Any]:
    return _service(request).forwarded(name, "unfence", peer_site(request), {})


@router.post("/groups/{name}/unfence")
def unfence_group(request: Request, name: str) -> dict[str, Any]:
    return _service(request).unfence(name)


class PeerReverse(BaseModel):
    volumes: list[GroupVolume] = Field(min_length=1, max_length=64)


def _reverse(request: Request) -> ReverseProtection:
    service: ReverseProtection = request.app.state.reverse
    return service


@router.post("/groups/{name}/reverse")
def reverse_group(request: Request, name: str) -> dict[str, Any]:
    return _reverse(request).reverse(name)


@router.post("/peer/groups/{name}/reverse")
def peer_reverse_group(request: Request, name: str, body: PeerReverse) -> dict[str, Any]:
    return _reverse(request).from_peer(name, peer_site(request),
                                       [v.model_dump() for v in body.volumes])
