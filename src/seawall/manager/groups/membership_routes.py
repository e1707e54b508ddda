"""Routes of a group's members and its deletion: parse, call ``GroupMembership``, return."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from seawall.contract.agent import RecoveryMembers
from seawall.manager.access.guard import peer_site
from seawall.manager.groups.membership import GroupMembership
from seawall.manager.groups.vm_groups import VmGroups

router = APIRouter(prefix="/api/v1", tags=["groups"])

class MembersChange(BaseModel):
    add: list[str] = Field(default=[], max_length=64)
    remove: list[str] = Field(default=[], max_length=64)
    add_vms: list[str] = Field(default=[], max_length=64)
    remove_vms: list[str] = Field(default=[], max_length=64)


class JoiningMember(BaseModel):
    agent: str = Field(min_length=1, max_length=64)
    cert_pem: str = Field(min_length=1, max_length=8192)


class PeerMembers(RecoveryMembers):
    member: str | None = Field(default=None, max_length=64)
    """The member stream that changes, in a group spanning agents."""
    new_member: JoiningMember | None = None
    """A member agent joining the group: ``member`` is its new stream."""
    forget_member: bool = False
    """A new member stream taken back: its journal goes."""
    end_member: bool = False
    """A member agent's last volumes leave: its stream ends (its journal stays)."""
    resume_member: bool = False
    """An ending taken back."""
    ended_after: int | None = Field(default=None, ge=0)
    """The lead's seq after which an ended member is in no group checkpoint."""


def _service(request: Request) -> GroupMembership:
    service: GroupMembership = request.app.state.group_members
    return service


@router.patch("/groups/{name}/volumes")
def change_members(request: Request, name: str, body: MembersChange) -> dict[str, Any]:
    if body.add_vms or body.remove_vms:
        vm_groups: VmGroups = request.app.state.vm_groups  # waits for the VMs' mirrors
        return vm_groups.update(name, body.add, body.remove, body.add_vms, body.remove_vms)
    return _service(request).update(name, body.add, body.remove)


@router.delete("/groups/{name}")
def delete_group(request: Request, name: str, keep_replicas: bool = False) -> dict[str, Any]:
    return _service(request).delete(name, keep_replicas)


@router.put("/peer/groups/{name}/volumes")
def peer_change_members(request: Request, name: str, body: PeerMembers) -> dict[str, Any]:
    change = RecoveryMembers.model_validate(body.model_dump(include=set(
        RecoveryMembers.model_fields)))
    joining = body.new_member.model_dump() if body.new_member else None
    return _service(request).members_from_peer(
        name, peer_site(request), change, body.member, joining,
        forget_member=body.forget_member, end_member=body.end_member,
        resume_member=body.resume_member, ended_after=body.ended_after)


@router.delete("/peer/groups/{name}")
def peer_delete_group(request: Request, name: str,
                      keep_replicas: bool = False) -> dict[str, Any]:
    return _service(request).delete_from_peer(name, peer_site(request), keep_replicas)
