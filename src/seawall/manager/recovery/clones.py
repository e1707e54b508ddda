"""Clones: standalone images of every volume of a group at a checkpoint, as files.

Rules:
- Only at a group's recovery site, into a directory inside the site's clone directory
  (``site init --clone-dir``; ``--to`` is relative to it, or absolute under it), whatever
  the caller's role: a path resolving outside it (``..``, a symlink out, elsewhere) is
  refused before anything is written (``seawall.confined``). The copying thread opens the
  directory again from the clone directory without following symlinks and makes each
  file with ``O_EXCL | O_NOFOLLOW`` (0600), so nothing swapped in meanwhile leads out.
- Clones only read (through temporary read-only exports), so they run beside protection,
  a failover test or another clone, and hold no group.
- A clone is all or nothing: every volume is written to ``NAME.part`` and the files are
  renamed to their names only once all are written; a failure removes the ``.part``
  files. Existing files are never overwritten (Conflict before anything starts).
- The exports of every volume are opened before the first byte is copied, so their views
  pin the checkpoint against retention for the whole clone; they are closed at the end,
  whatever happened.
- The copy runs in a thread of the manager; progress lives in that thread's memory. A
  manager restart ends it: ``reconcile`` finds the row ``running`` with no thread here,
  removes its exports and ``.part`` files and marks it ``interrupted``. Every end writes
  a report.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seawall.config import SiteConfig
from seawall.confined import inside, open_directory
from seawall.contract.agent import ExportCreate
from seawall.contract.agent_api import AgentApi
from seawall.contract.recovered_vms import VmDefine
from seawall.errors import Conflict, InvalidInput, SeawallError
from seawall.http import JsonClient
from seawall.manager.groups.service import GroupService
from seawall.manager.models import RecoveryOperation
from seawall.manager.recovery.clone_vms import clone_definitions
from seawall.manager.recovery.imaging import FORMATS, write_image
from seawall.manager.recovery.machine import OperationEvent, OperationState
from seawall.manager.recovery.operations import new_operation_id, recovery_group
from seawall.manager.recovery.reports import ReportStore, build_report
from seawall.manager.recovery.store import OperationStore, add_step, describe

log = logging.getLogger(__name__)

KIND = "clone"


@dataclass
class CloneProgress:
    total_bytes: int
    finished_bytes: int = 0  # of the volumes written completely
    current_bytes: int = 0  # of the volume being written

    def volume_done(self, done_bytes: int) -> None:
        self.current_bytes = done_bytes

    def describe(self) -> dict[str, int]:
        return {"done_bytes": self.finished_bytes + self.current_bytes,
                "total_bytes": self.total_bytes}


def part_name(path: str) -> str:
    return f"{Path(path).name}.part"


class CloneService:
    def __init__(self, config: SiteConfig, store: OperationStore, reports: ReportStore,
                 agent: JsonClient, groups: GroupService) -> None:
        self.config = config
        self.store = store
        self.reports = reports
        self.agent = AgentApi(agent)
        self.groups = groups
        self._guard = threading.Lock()
        self._running: dict[str, CloneProgress] = {}  # clones whose thread is in this process

    def start(self, group_name: str, checkpoint: str, to: str, image_format: str,
              user: str | None, define: bool = False) -> dict[str, Any]:
        started_at = datetime.now(UTC)
        if image_format not in FORMATS:
            raise InvalidInput(f"format must be raw or qcow2, not {image_format!r}")
        directory = inside(self.config.clone_dir, to, "--to")  # first: whatever the group
        group = recovery_group(self.groups, group_name, "seawall clone")
        self.reconcile()
        chosen = self.groups.checkpoint_of(group, checkpoint)
        outputs = [{"volume": v["name"], "path": str(directory / f"{v['name']}.{image_format}"),
                    "format": image_format, "size_bytes": v["size_bytes"],
                    "read_from": self.groups.stream_at(group, v["name"], chosen)}
                   for v in self.groups.volumes_at(group, chosen)]
        operation_id = new_operation_id("clone", started_at)
        definitions = self._definitions(group.name, operation_id, directory, outputs)
        if define:
            self.agent.recovery_networks()  # InvalidInput now if no libvirt can define them
        taken = [o["path"] for o in outputs
                 if Path(o["path"]).exists() or directory.joinpath(part_name(o["path"])).exists()]
        taken += [d["path"] for d in definitions if Path(d["path"]).exists()]
        if taken:
            raise Conflict(f"{', '.join(taken)} exists already: clone into another directory")
        os.close(self._open_directory(str(directory), create=True))
        operation = RecoveryOperation(
            operation_id=operation_id, kind=KIND,
            group_id=group.group_id, group_name=group.name,
            state=OperationState.RUNNING.value, holds_group_id=None,
            checkpoint_id=chosen["id"], checkpoint_time_ns=chosen["time_ns"],
            checkpoint_name=chosen["name"], user=user or getpass.getuser(),
            started_at=started_at, notes="",
            details={"options": {"checkpoint": checkpoint, "to": to,
                                 "directory": str(directory), "format": image_format,
                                 "define": define},
                     "outputs": outputs, "definitions": definitions, "exports": []},
        )
        add_step(operation, "requested", started_at)
        progress = CloneProgress(sum(o["size_bytes"] for o in outputs))
        with self._guard:
            self.store.create(operation)
            self._running[operation.operation_id] = progress
        threading.Thread(target=self._run, args=(operation, progress),
                         name=f"clone {operation.operation_id}", daemon=True).start()
        return self._describe(operation)

    def get(self, operation_id: str) -> dict[str, Any]:
        self.reconcile()
        operation = self.store.get(operation_id)
        if operation.kind != KIND:
            raise InvalidInput(f"operation {operation_id} is a {operation.kind}, not a clone")
        return self._describe(operation)

    def reconcile(self) -> None:
        """Clones left ``running`` by an earlier manager process are interrupted."""
        with self._guard:
            orphans = [op for op in self.store.active(KIND)
                       if op.operation_id not in self._running]
        for operation in orphans:
            self._clean_up(operation.details)
            with contextlib.suppress(Conflict):  # another request got there first
                final = self.store.transition(
                    operation.operation_id, OperationEvent.LOST, step="interrupted",
                    error="the site manager stopped while the clone was being written; "
                          "its partial files were removed")
                self.reports.write(build_report(final, self.config.name))

    # --- the copying thread -------------------------------------------------------------

    def _run(self, operation: RecoveryOperation, progress: CloneProgress) -> None:
        operation_id, outputs = operation.operation_id, operation.details["outputs"]
        exports: list[dict[str, Any]] = []
        directory_fd: int | None = None
        try:
            directory_fd = self._open_directory(operation.details["options"]["directory"])
            for output in outputs:
                journal, checkpoint = output["read_from"]
                exports.append(self.agent.create_export(ExportCreate(
                    group_id=journal, volume=output["volume"],
                    checkpoint=str(checkpoint))).model_dump())
            self.store.update(operation_id, step="exports opened",
                              exports=[e["name"] for e in exports])
            for output, export in zip(outputs, exports, strict=True):
                write_image(export["uri"], directory_fd, part_name(output["path"]),
                            output["size_bytes"], output["format"], progress.volume_done)
                progress.finished_bytes += output["size_bytes"]
                progress.current_bytes = 0
                self.store.update(operation_id, step=f"{output['volume']} written")
            for output in outputs:
                os.replace(part_name(output["path"]), Path(output["path"]).name,
                           src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
            definitions = self._write_definitions(operation, directory_fd)
            os.fsync(directory_fd)
            final = self.store.transition(operation_id, OperationEvent.FINISH, step="done",
                                          details={"definitions": definitions})
        except Exception as exc:  # any failure must end the row, or it stays running
            log.exception("clone %s failed", operation_id)
            message = exc.message if isinstance(exc, SeawallError) else str(exc)
            if directory_fd is not None:
                self._remove_parts(directory_fd, outputs)
            final = self.store.transition(operation_id, OperationEvent.FAIL, step="failed",
                                          error=message)
        finally:
            if directory_fd is not None:
                os.close(directory_fd)
            self._stop_exports([e["name"] for e in exports])
            with self._guard:
                self._running.pop(operation_id, None)
        self.reports.write(build_report(final, self.config.name))

    # --- VM definitions (``clone_vms``) ---------------------------------------------------

    def _definitions(self, group: str, operation_id: str, directory: Path,
                     outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The definitions of the checkpoint's VMs, from each member journal the clone
        reads (one for most groups)."""
        images = {o["volume"]: (Path(o["path"]), o["format"]) for o in outputs}
        journals = sorted({(journal, str(seq)) for journal, seq in
                           (o["read_from"] for o in outputs)})
        configs = [config for journal, seq in journals
                   for config in self.agent.vm_configs(journal, seq)]
        mark = {"kind": "clone", "operation": operation_id, "group": group}
        return [{"vm": d.vm, "domain": d.domain, "path": str(directory / d.file_name),
                 "xml": d.xml, "notes": list(d.notes), "skipped": d.skipped}
                for d in clone_definitions(configs, images, directory, mark,
                                           lambda path: Path(path).exists())]

    def _write_definitions(self, operation: RecoveryOperation,
                           directory_fd: int) -> list[dict[str, Any]]:
        """Each definition's file beside the images (0600, never over a file), and defined
        at the recovery host, shut off, if asked; what was done, without the XML."""
        written = []
        for definition in operation.details.get("definitions", []):
            entry = {k: v for k, v in definition.items() if k != "xml"}
            if definition["xml"] is not None:
                fd = os.open(Path(definition["path"]).name,
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                             dir_fd=directory_fd)
                with os.fdopen(fd, "w") as file:
                    file.write(definition["xml"])
                    file.flush()
                    os.fsync(file.fileno())
                if operation.details["options"].get("define"):
                    entry["defined_uuid"] = self.agent.define_vm(VmDefine(
                        name=definition["domain"], xml=definition["xml"])).uuid
            written.append(entry)
        return written

    # --- helpers ------------------------------------------------------------------------

    def _describe(self, operation: RecoveryOperation) -> dict[str, Any]:
        description = describe(operation)
        with self._guard:
            progress = self._running.get(operation.operation_id)
        if progress is not None:
            description["progress"] = progress.describe()
        return description

    def _open_directory(self, directory: str, create: bool = False) -> int:
        """The clone's directory, opened from the clone directory (``seawall.confined``)."""
        root = self.config.clone_dir.resolve()
        try:
            if create:  # a site made before the clone directory has none yet
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
            return open_directory(root, Path(directory).relative_to(root), create)
        except ValueError:  # a row from before the clone directory: not ours to touch
            raise InvalidInput(f"{directory} is outside the clone directory {root}") from None
        except OSError as exc:
            raise InvalidInput(f"cannot make {directory}: {exc.strerror}") from None

    def _clean_up(self, details: dict[str, Any]) -> None:
        self._stop_exports(details.get("exports", []))
        options = details.get("options", {})
        try:
            directory_fd = self._open_directory(options.get("directory", options.get("to", "")))
        except InvalidInput:  # gone, or outside: no partial file of ours there
            return
        try:
            self._remove_parts(directory_fd, details.get("outputs", []))
        finally:
            os.close(directory_fd)

    def _stop_exports(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(SeawallError):  # gone already (agent restarted)
                self.agent.stop_export(name)

    @staticmethod
    def _remove_parts(directory_fd: int, outputs: list[dict[str, Any]]) -> None:
        for output in outputs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part_name(output["path"]), dir_fd=directory_fd)
