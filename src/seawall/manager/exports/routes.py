"""Export routes: parse, call ``ExportService``, return."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from seawall.manager.exports.service import ExportService

router = APIRouter(prefix="/api/v1/exports", tags=["exports"])


class ExportCreate(BaseModel):
    group: str = Field(min_length=1, max_length=64)
    volume: str = Field(min_length=1, max_length=64)
    checkpoint: str = Field(default="latest", min_length=1, max_length=32)


class ExportStop(BaseModel):
    uri: str = Field(min_length=1, max_length=1024)


def _service(request: Request) -> ExportService:
    service: ExportService = request.app.state.exports
    return service


@router.get("")
def list_exports(request: Request) -> list[dict[str, Any]]:
    return _service(request).list_all()


@router.post("", status_code=201)
def create_export(request: Request, body: ExportCreate) -> dict[str, Any]:
    return _service(request).create(body.group, body.volume, body.checkpoint)


@router.post("/stop")
def stop_export(request: Request, body: ExportStop) -> dict[str, Any]:
    return _service(request).stop(body.uri)
