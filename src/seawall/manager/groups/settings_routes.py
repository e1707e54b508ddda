"""Group settings routes: show, update, and the update the recovery site takes from its peer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from seawall.manager.access.guard import peer_site
from seawall.manager.groups.settings import GroupOptions, SettingsChange
from seawall.manager.groups.updates import SettingsUpdates

router = APIRouter(prefix="/api/v1", tags=["groups"])


class PeerSettings(BaseModel):
    settings: GroupOptions


def _service(request: Request) -> SettingsUpdates:
    service: SettingsUpdates = request.app.state.group_settings
    return service


@router.get("/groups/{name}/settings")
def show_settings(request: Request, name: str) -> dict[str, Any]:
    return _service(request).show(name)


@router.patch("/groups/{name}/settings")
def update_settings(request: Request, name: str, body: SettingsChange) -> dict[str, Any]:
    return _service(request).update(name, body.given())


@router.put("/peer/groups/{name}/settings")
def peer_update_settings(request: Request, name: str, body: PeerSettings) -> dict[str, Any]:
    return _service(request).from_peer(name, peer_site(request), body.settings)
