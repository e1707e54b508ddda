"""The file-restore browser: at a group's recovery site, volume -> checkpoint -> partition
-> directories; a file downloads as it is, a directory as a tar archive.

Rules:
- It calls the ``FileService`` the API's ``/api/v1/files`` routes call, and needs what they
  need (operator: it reads the protected data); a viewer is refused with the API's words.
- The checkpoint is chosen once (latest, latest tagged, or an id) and every link after
  that carries the id it resolved to, so browsing stays at one point in time while new
  checkpoints arrive. ``part`` is ``none`` (no partition table) or a partition number;
  a first visit without it reads the partition table and offers the partitions when there
  are several.
- Names and paths from the disk are untrusted (``files_views``): escaped on the page,
  quoted in URLs, sanitised in ``Content-Disposition``. Downloads are attachments of type
  ``application/octet-stream`` (with ``nosniff``): a restored file is never rendered.
- A download's export is released when its answer ends, however it ends
  (``ClosingStreamingResponse``, as the API's archive route).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from seawall.errors import InvalidInput
from seawall.manager.console import files_views
from seawall.manager.console.routes import _manager, _render, refuse_unless, signed_in
from seawall.manager.console.sessions import ConsoleUser
from seawall.manager.files.routes import ClosingStreamingResponse

router = APIRouter(include_in_schema=False)

LIST = ("GET", "/api/v1/files/{group}/{volume}")
ARCHIVE = ("GET", "/api/v1/files/{group}/{volume}/archive")
CONTENT = ("GET", "/api/v1/files/{group}/{volume}/content")
CHECKPOINTS_OFFERED = 100
_PART = re.compile(r"none|[1-9][0-9]{0,3}")
PathQuery = Annotated[str, Query(min_length=1, max_length=4096)]
CheckpointQuery = Annotated[str, Query(min_length=1, max_length=32)]
PartQuery = Annotated[str, Query(max_length=8)]


def _part(part: str) -> int | None:
    if not _PART.fullmatch(part):
        raise InvalidInput(f"part must be 'none' or a partition number, not {part!r}")
    return files_views.part_text(part)


@router.get("/files")
def files_home(request: Request, user: ConsoleUser = Depends(signed_in)) -> Response:
    """The groups this site recovers, each volume a link to choose its checkpoint."""
    refuse_unless(user, LIST)
    groups = [g for g in _manager(request).groups.list_all() if g["role"] == "recovery"]
    for group in groups:
        group["links"] = [(v["name"], files_views.page_url(group["name"], v["name"]))
                          for v in group["volumes"]]
    return _render(request, "files_home.html", {"groups": groups}, user)


@router.get("/files/{group}/{volume}")
def browse(request: Request, group: str, volume: str, checkpoint: CheckpointQuery | None = None,
           part: PartQuery = "", path: PathQuery = "/",
           user: ConsoleUser = Depends(signed_in)) -> Response:
    refuse_unless(user, LIST)
    files = _manager(request).files
    context: dict[str, Any] = {"group": group, "volume": volume, "path": path}
    if checkpoint is None:  # step 1: choose the checkpoint
        listed = _manager(request).groups.checkpoints(group)
        context["checkpoints"] = list(reversed(listed))[:CHECKPOINTS_OFFERED]
        context["action"] = files_views.page_url(group, volume)
        return _render(request, "files_checkpoint.html", context, user)
    if not part:  # step 2: the partition table decides
        layout = files.layout(group, volume, checkpoint)
        chosen = str(layout["checkpoint"]["id"])
        partitions = layout["partitions"]
        if len(partitions) > 1:
            context.update(layout=layout, choices=[
                (p, files_views.page_url(group, volume, checkpoint=chosen,
                                         part=str(p["number"]), path="/"))
                for p in partitions])
            return _render(request, "files_partitions.html", context, user)
        part = str(partitions[0]["number"]) if partitions else files_views.WHOLE
        checkpoint = chosen
    listing = files.list(group, volume, path, checkpoint, _part(part))
    where = {"checkpoint": str(listing["checkpoint"]["id"]), "part": part}
    context.update(listing=listing,
                   crumbs=files_views.breadcrumbs(group, volume, where, listing["path"]),
                   rows=files_views.entry_rows(group, volume, where, listing["path"],
                                               listing["entries"]),
                   choose=files_views.page_url(group, volume),
                   here_archive=files_views.page_url(group, volume, "archive", **where,
                                                     path=listing["path"]))
    return _render(request, "files_browse.html", context, user)


async def _download(summary: dict[str, Any], stream: Any, media_type: str,
                    filename: str) -> Response:
    try:
        return ClosingStreamingResponse(stream, media_type=media_type, headers={
            "Content-Disposition": files_views.content_disposition(filename)})
    except BaseException:
        await run_in_threadpool(stream.close)
        raise


@router.get("/files/{group}/{volume}/download")
async def download(request: Request, group: str, volume: str, checkpoint: CheckpointQuery,
                   part: PartQuery, path: PathQuery,
                   user: ConsoleUser = Depends(signed_in)) -> Response:
    refuse_unless(user, CONTENT)
    summary, stream = await run_in_threadpool(_manager(request).files.read, group, volume,
                                              path, checkpoint, _part(part))
    return await _download(summary, stream, "application/octet-stream", summary["name"])


@router.get("/files/{group}/{volume}/archive")
async def archive(request: Request, group: str, volume: str, checkpoint: CheckpointQuery,
                  part: PartQuery, path: PathQuery,
                  user: ConsoleUser = Depends(signed_in)) -> Response:
    refuse_unless(user, ARCHIVE)
    summary, stream = await run_in_threadpool(_manager(request).files.archive, group, volume,
                                              path, checkpoint, _part(part))
    return await _download(summary, stream, "application/x-tar", f"{summary['name']}.tar")
