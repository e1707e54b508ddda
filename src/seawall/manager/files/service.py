"""File-level restore: list and read files of a volume at a checkpoint, without mounting.

Rules:
- Only at the group's recovery site. Every request opens a temporary read-only export of
  the volume at the checkpoint (the agent's point-in-time view: nothing is copied, the
  journal and replica are only read) and reads it over NBD through a block cache; the
  export pins the checkpoint against retention while in use and is removed afterwards,
  whatever happened (for an archive: when its stream ends, fails or is dropped).
- Partitions: a volume without a partition table is one file system; with one, the
  partition is ``partition`` (its number), or the only one there is; several and none
  chosen is InvalidInput listing them.
- ``archive`` walks the whole tree (metadata only) before the first byte goes out, so
  a missing path, an unreadable file system or an unsafe name is a clean error; then the
  tar stream reads file contents as it is consumed, in bounded memory.
- ``read`` gives one regular file's bytes, as they are (for a browser's download); the
  summary says its name and size before the first byte goes out.
- ``layout`` tells the chosen checkpoint and the volume's partition table without reading
  a file system (a browser offers the partitions before listing one).
- An archive's (or a file's) export is released by ``ExportStream.close`` (at its end, on its error,
  or by the route when the answer ends however it ends), never by the garbage collector:
  a stream left to it was released at a random allocation in a random thread, inside
  another request's call to the agent through the same client, whose connection pool
  lock that thread already held, and every later call to the agent waited on that lock
  forever (the `files ls` that hung in CI). The stream has no finalizer on purpose.
- Every read has a deadline: the agent's client's, and the NBD client's per socket
  operation (``NBD_TIMEOUT_S``); a silent export fails the request with ``PeerError``.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from seawall.contract.agent import ExportCreate
from seawall.contract.agent_api import AgentApi
from seawall.errors import InvalidInput, NotFound, SeawallError
from seawall.http import JsonClient
from seawall.manager.files.blocks import CachedVolume, Window
from seawall.manager.files.filesystem import Entry, FileSystem, normalize_path
from seawall.manager.files.partitions import Partition, PartitionTable, parse_partition_table
from seawall.manager.files.tarstream import TAR_TYPES, TarItem, tar_stream
from seawall.manager.groups.service import GroupService
from seawall.manager.models import Group
from seawall.manager.recovery.operations import recovery_group
from seawall.nbd.blocking import NbdClient

SKIPPED_SHOWN = 20  # the summary travels in an HTTP header: keep it short
NBD_TIMEOUT_S = 30.0
"""How long a read of the export may go unanswered (per socket operation, not in total)."""

log = logging.getLogger(__name__)


@dataclass
class _Session:
    """One open export, its NBD connection and the file system chosen on it."""

    facts: dict[str, Any]
    fs: FileSystem
    close_steps: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        self.close_steps.close()


class ExportStream:
    """Bytes read over an open session (an archive's tar stream, or a file's content):
    iterate, then ``close`` (which releases the export; again is a no-op). Ending or
    failing closes it too."""

    def __init__(self, session: _Session, chunks: Generator[bytes, None, None]) -> None:
        self._session = session
        self._chunks = chunks

    def __iter__(self) -> ExportStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            self._chunks.close()
        finally:
            self._session.close()


class FileService:
    def __init__(self, agent: JsonClient, groups: GroupService) -> None:
        self.agent_api = AgentApi(agent)
        self.groups = groups

    def list(self, group_name: str, volume: str, path: str, checkpoint: str,
             partition: int | None) -> dict[str, Any]:
        session = self._open(group_name, volume, checkpoint, partition)
        try:
            entries = session.fs.list(path)
        finally:
            session.close()
        return {**session.facts, "path": normalize_path(path),
                "entries": [entry.describe() for entry in entries]}

    def archive(self, group_name: str, volume: str, path: str, checkpoint: str,
                partition: int | None) -> tuple[dict[str, Any], ExportStream]:
        """What will be restored (a summary) and the tar stream; the caller must close the
        stream, whether it was read to its end or not (closing releases the export)."""
        session = self._open(group_name, volume, checkpoint, partition)
        try:
            top_name = posixpath.basename(normalize_path(path)) or volume
            items: list[TarItem] = []
            skipped: list[str] = []
            for parts, entry in session.fs.walk(path):
                member = posixpath.join(top_name, *parts)
                if not parts and entry.kind not in TAR_TYPES:
                    raise InvalidInput(f"{normalize_path(path)} is a {entry.kind}: only "
                                       "files, directories and symlinks can be restored")
                if entry.kind not in TAR_TYPES:
                    skipped.append(f"{member} ({entry.kind})")
                    continue
                content = None if entry.kind != "file" else _content(session.fs, entry)
                items.append(TarItem(member, entry, content))
        except BaseException:
            session.close()
            raise
        files = [item.entry for item in items if item.entry.kind == "file"]
        summary = {**session.facts, "path": normalize_path(path), "name": top_name,
                   "type": items[0].entry.kind,
                   "files": len(files), "bytes": sum(e.size_bytes for e in files),
                   "entries": len(items), "skipped_count": len(skipped),
                   "skipped": skipped[:SKIPPED_SHOWN]}
        return summary, ExportStream(session, tar_stream(items))

    def read(self, group_name: str, volume: str, path: str, checkpoint: str,
             partition: int | None) -> tuple[dict[str, Any], ExportStream]:
        """A regular file's summary (its name, size) and its content as a stream; the caller
        must close the stream, as an archive's."""
        session = self._open(group_name, volume, checkpoint, partition)
        try:
            entry = session.fs.entry(path)
            if entry.kind != "file":
                raise InvalidInput(f"{normalize_path(path)} is a {entry.kind}, not a regular "
                                   "file: restore it as an archive")
        except BaseException:
            session.close()
            raise
        summary = {**session.facts, "path": normalize_path(path), "name": entry.name,
                   "size_bytes": entry.size_bytes}
        return summary, ExportStream(session, session.fs.chunks(entry))

    def layout(self, group_name: str, volume: str, checkpoint: str) -> dict[str, Any]:
        """The checkpoint ``checkpoint`` names and the volume's partition table there."""
        group = recovery_group(self.groups, group_name, "seawall files")
        chosen = self.groups.checkpoint_of(group, checkpoint)
        with contextlib.ExitStack() as steps:
            whole = self._volume(group, volume, chosen, steps)
            table = parse_partition_table(whole.read, whole.size_bytes)
        return {**_facts(group_name, volume, chosen, table), "size_bytes": whole.size_bytes}

    # --- opening ------------------------------------------------------------------------

    def _open(self, group_name: str, volume: str, checkpoint: str,
              partition: int | None) -> _Session:
        group = recovery_group(self.groups, group_name, "seawall files")
        chosen = self.groups.checkpoint_of(group, checkpoint)
        steps = contextlib.ExitStack()
        try:
            whole = self._volume(group, volume, chosen, steps)
            table = parse_partition_table(whole.read, whole.size_bytes)
            chosen_partition = _choose_partition(table, partition, volume)
            source: CachedVolume | Window = whole
            where = f"volume {volume}"
            if chosen_partition is not None:
                source = Window(whole, chosen_partition.start_bytes, chosen_partition.size_bytes)
                where = f"partition {chosen_partition.number} of volume {volume}"
            fs = FileSystem(source, where)
        except BaseException:
            steps.close()
            raise
        facts = {**_facts(group_name, volume, chosen, table),
                 "partition": chosen_partition.describe() if chosen_partition else None,
                 "filesystem": fs.kind}
        return _Session(facts, fs, steps)

    def _volume(self, group: Group, volume: str, chosen: dict[str, Any],
                steps: contextlib.ExitStack) -> CachedVolume:
        """The volume at checkpoint ``chosen`` through a temporary export, which ``steps``
        releases."""
        journal, at = self.groups.stream_at(group, volume, chosen)
        export = self.agent_api.create_export(
            ExportCreate(group_id=journal, volume=volume, checkpoint=at))
        steps.callback(self._stop_export, export.name)
        client = steps.enter_context(NbdClient(export.uri, timeout_s=NBD_TIMEOUT_S))
        return CachedVolume(client.read, client.size)

    def _stop_export(self, name: str) -> None:
        try:
            self.agent_api.stop_export(name)
        except NotFound:
            pass  # gone already (the agent restarted)
        except SeawallError as exc:  # the request's own outcome stands
            log.warning("export %s of a file restore not released: %s", name, exc)


def _facts(group_name: str, volume: str, chosen: dict[str, Any],
           table: PartitionTable | None) -> dict[str, Any]:
    return {"group": group_name, "volume": volume,
            "checkpoint": {"id": chosen["id"], "time_ns": chosen["time_ns"],
                           "name": chosen["name"]},
            "partition_table": table.scheme if table else None,
            "partitions": [p.describe() for p in table.partitions] if table else []}


def _content(fs: FileSystem, entry: Entry) -> Callable[[], Iterator[bytes]]:
    return lambda: fs.chunks(entry)


def _choose_partition(table: PartitionTable | None, number: int | None,
                      volume: str) -> Partition | None:
    if table is None:
        if number is not None:
            raise InvalidInput(f"volume {volume} has no partition table (its file system "
                               "spans the whole volume): leave out --partition")
        return None
    listing = "; ".join(p.text() for p in table.partitions)
    if number is not None:
        chosen = table.get(number)
        if chosen is None:
            raise InvalidInput(f"volume {volume} has no partition {number} in its "
                               f"{table.scheme.upper()} table ({listing or 'none'})")
        return chosen
    if len(table.partitions) == 1:
        return table.partitions[0]
    if not table.partitions:
        raise InvalidInput(f"volume {volume} has an empty {table.scheme.upper()} partition "
                           "table: no file system to read")
    raise InvalidInput(f"volume {volume} has {len(table.partitions)} partitions "
                       f"({table.scheme.upper()}): {listing}; choose one with --partition N")
