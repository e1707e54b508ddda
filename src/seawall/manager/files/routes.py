"""File-restore routes: parse, call ``FileService``, return (JSON, or a tar stream)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from seawall.manager.files.service import FileService

router = APIRouter(prefix="/api/v1/files", tags=["files"])

SUMMARY_HEADER = "X-Seawall-Restore"
PathQuery = Annotated[str, Query(min_length=1, max_length=4096)]
CheckpointQuery = Annotated[str, Query(min_length=1, max_length=32)]
PartitionQuery = Annotated[int | None, Query(ge=1, le=1024)]


def _service(request: Request) -> FileService:
    service: FileService = request.app.state.files
    return service


@router.get("/{group}/{volume}")
def list_files(request: Request, group: str, volume: str, path: PathQuery = "/",
               checkpoint: CheckpointQuery = "latest",
               partition: PartitionQuery = None) -> dict[str, Any]:
    return _service(request).list(group, volume, path, checkpoint, partition)


@router.get("/{group}/{volume}/archive")
def archive(request: Request, group: str, volume: str, path: PathQuery = "/",
            checkpoint: CheckpointQuery = "latest",
            partition: PartitionQuery = None) -> StreamingResponse:
    """A tar stream of ``path``; what it holds is in the ``X-Seawall-Restore`` header."""
    summary, chunks = _service(request).archive(group, volume, path, checkpoint, partition)
    return StreamingResponse(chunks, media_type="application/x-tar",
                             headers={SUMMARY_HEADER: json.dumps(summary)})
