"""File-restore routes: parse, call ``FileService``, return (JSON, or a tar stream).

An archive's (or a file's content's) answer closes its stream (``ExportStream.close``,
which releases the export) when the answer ends, however it ends: read to the end,
failed, or dropped by the client.
Starlette closes neither the iterator it is given nor its own wrapper on a dropped client,
so without this the export waited for the garbage collector (``files.service`` says why
that hung). The close runs in a worker thread (it calls the agent), shielded from the
cancellation that ends the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Protocol

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from seawall.manager.files.service import FileService

router = APIRouter(prefix="/api/v1/files", tags=["files"])

SUMMARY_HEADER = "X-Seawall-Restore"
PathQuery = Annotated[str, Query(min_length=1, max_length=4096)]
CheckpointQuery = Annotated[str, Query(min_length=1, max_length=32)]
PartitionQuery = Annotated[int | None, Query(ge=1, le=1024)]


class ClosableStream(Protocol):
    """What ``ClosingStreamingResponse`` streams (``files.service.ExportStream``)."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class ClosingStreamingResponse(StreamingResponse):
    """A streamed answer whose ``stream`` is closed when the answer ends."""

    def __init__(self, stream: ClosableStream, media_type: str,
                 headers: dict[str, str]) -> None:
        super().__init__(stream, media_type=media_type, headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.stream.close)


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
    return _streamed(*_service(request).archive(group, volume, path, checkpoint, partition),
                     "application/x-tar")


@router.get("/{group}/{volume}/content")
def content(request: Request, group: str, volume: str, path: PathQuery,
            checkpoint: CheckpointQuery = "latest",
            partition: PartitionQuery = None) -> StreamingResponse:
    """A regular file's bytes as they are; its summary is in the ``X-Seawall-Restore``
    header."""
    return _streamed(*_service(request).read(group, volume, path, checkpoint, partition),
                     "application/octet-stream")


def _streamed(summary: dict[str, Any], stream: ClosableStream,
              media_type: str) -> StreamingResponse:
    """``stream`` as the answer, ``summary`` in its header; closed if no answer is made."""
    try:
        return ClosingStreamingResponse(stream, media_type=media_type,
                                        headers={SUMMARY_HEADER: json.dumps(summary)})
    except BaseException:
        stream.close()
        raise
