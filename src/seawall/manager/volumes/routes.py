"""Volume routes: parse, call ``VolumeService``, return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from seawall.manager.volumes.service import VolumeService

router = APIRouter(prefix="/api/v1/volumes", tags=["volumes"])


class VolumeCreate(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    size_bytes: int = Field(gt=0, le=1 << 50)
    agent: str | None = Field(default=None, min_length=1, max_length=63,
                              description="Its agent (`seawall agent list`); default: the "
                              "site's own.")


class VolumeAdd(BaseModel):
    name: str = Field(min_length=1, max_length=63)
    path: Path
    agent: str | None = Field(default=None, min_length=1, max_length=63,
                              description="Its agent (`seawall agent list`); default: the "
                              "site's own.")


def _service(request: Request) -> VolumeService:
    service: VolumeService = request.app.state.volumes
    return service


@router.get("")
def list_volumes(request: Request) -> list[dict[str, Any]]:
    return _service(request).list_all()


@router.post("", status_code=201)
def create_volume(request: Request, body: VolumeCreate) -> dict[str, Any]:
    return _service(request).create(body.name, body.size_bytes, body.agent)


@router.post("/add", status_code=201)
def add_volume(request: Request, body: VolumeAdd) -> dict[str, Any]:
    return _service(request).add(body.name, body.path, body.agent)


@router.delete("/{name}")
def remove_volume(request: Request, name: str) -> dict[str, Any]:
    return _service(request).remove(name)
