"""Site, pairing and peer routes: parse, call ``SiteService``, return."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from seawall.manager.access.guard import peer_site
from seawall.manager.sites.service import SiteService
from seawall.manager.sites.unpairing import Unpairing

router = APIRouter(prefix="/api/v1", tags=["sites"])


class SiteInfo(BaseModel):
    site_id: str = Field(min_length=1, max_length=36)
    name: str = Field(min_length=1, max_length=64)
    api_url: str = Field(min_length=1, max_length=256)
    replication_host: str = Field(min_length=1, max_length=256)
    replication_port: int = Field(gt=0, lt=65536)
    cert_pem: str = Field(min_length=1, max_length=8192)
    peer_api_url: str | None = Field(default=None, min_length=1, max_length=256,
                                     pattern=r"^https://")  # absent from older sites


class PairRequest(BaseModel):
    peer_url: str = Field(min_length=1, max_length=256)
    token: str = Field(min_length=1, max_length=256)


class AcceptRequest(BaseModel):
    token: str = Field(min_length=1, max_length=256)
    site: SiteInfo


def _service(request: Request) -> SiteService:
    service: SiteService = request.app.state.sites
    return service


@router.get("/site")
def site(request: Request) -> dict[str, Any]:
    return _service(request).info()


@router.post("/pairing/token")
def new_token(request: Request) -> dict[str, str]:
    return {"token": _service(request).new_token()}


@router.post("/pairing")
def pair(request: Request, body: PairRequest) -> dict[str, Any]:
    return _service(request).pair(body.peer_url, body.token)


@router.post("/pairing/accept")
def accept(request: Request, body: AcceptRequest) -> dict[str, Any]:
    return _service(request).accept(body.token, body.site.model_dump())


@router.get("/peers")
def peers(request: Request) -> list[dict[str, Any]]:
    return _service(request).peers()


def _unpairing(request: Request) -> Unpairing:
    service: Unpairing = request.app.state.unpairing
    return service


@router.delete("/peers/{name}")
def unpair(request: Request, name: str) -> dict[str, Any]:
    return _unpairing(request).unpair(name)


@router.delete("/peer/pairing")
def unpaired_by_peer(request: Request) -> dict[str, Any]:
    """The calling site (known by its certificate) unpairs from this one."""
    return _unpairing(request).unpaired_by(peer_site(request))
