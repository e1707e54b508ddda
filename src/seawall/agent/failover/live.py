"""LiveFailovers: the recovery agent's live failovers, their images, commit and rollback.

A live failover of a recovery group stops its replication and retention and gives every
volume a ``LiveImage`` at one checkpoint (the journal and replica stay as they are), served
over NBD read-write. Commit consolidates each image into its replica, which becomes a
volume of this agent under the image's export name; rollback discards the images and lets
replication resume where it stopped.

Rules and invariants:
- The group's ``RecoverySpec.live`` is saved (``state.json``) before anything else is
  done: from then on the receiver refuses the group's sessions (``failed_over``), so the
  journal takes no more appends, and an agent restart brings the images back (their
  overlay maps are on disk, see ``LiveImage``). Retention stops for the group meanwhile.
- Nothing changes the journal or the replica but commit, which goes: ``committing``
  saved; clients dropped; every image consolidated into its replica (idempotent, so a
  restart in the middle runs it again); ``consolidated`` saved; each replica renamed to
  the agent's volumes folder (pre-seeded ones, and ones on another file system, stay
  where they are); one state save that
  drops the recovery group and adds the volumes (the commit point for the agent); the
  group's folder deleted. A restart in ``consolidated`` only finishes the last steps.
- Export names: a live image is served under its volume's name, or ``GROUP.VOLUME`` when
  this agent already serves that name; the committed volume keeps the image's name, so
  clients of the image find the volume at the same URI.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from seawall.agent.failover.drills import FailoverTests
from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.images.live import LiveImage
from seawall.agent.recover.group import RecoveryGroup, replica_path
from seawall.agent.state import SavedVolume
from seawall.config import SiteConfig
from seawall.contract.agent import LiveFailoverSpec, RecoverySpec
from seawall.errors import Conflict, NotFound, SeawallError

log = logging.getLogger(__name__)


@dataclass
class LiveRun:
    group: RecoveryGroup
    images: dict[str, tuple[str, LiveImage]] = field(default_factory=dict)
    """Export name -> (volume name, image)."""
    commit_task: asyncio.Task[None] | None = None
    error: str | None = None

    @property
    def spec(self) -> LiveFailoverSpec:
        live = self.group.spec.live
        assert live is not None
        return live


class LiveFailoverHost(Protocol):
    """What a live failover asks of the agent (``seawall.agent.service.Agent``): its
    collections change only through these."""

    def recovery_group(self, group_id: str) -> RecoveryGroup: ...

    def names(self) -> list[str]: ...  # every export name served

    def save_state(self) -> None: ...

    def group_dir(self, spec: RecoverySpec) -> Path: ...

    def end_replication_session(self, group_id: str) -> None: ...

    def disconnect_export(self, name: str) -> None: ...

    def close_recovery(self, group_id: str) -> None: ...  # closed and forgotten, not saved

    def recovery_to_volumes(self, group_id: str, volumes: list[SavedVolume]) -> None:
        """One state save that drops the recovery group and adds the volumes; then served."""


class LiveFailovers:
    def __init__(self, config: SiteConfig, host: LiveFailoverHost,
                 drills: FailoverTests) -> None:
        self._config = config
        self._host = host
        self._drills = drills
        self.runs: dict[str, LiveRun] = {}  # by operation id
        self._lock = asyncio.Lock()
        """Start and rollback one at a time: a rollback asked while a start is under way
        (a restarted manager rolling back what its predecessor began) waits for it."""
        self.committed: dict[str, dict[str, Any]] = {}
        """Commits this process finished (after a restart the group is simply gone)."""

    # --- BackendCatalog part ------------------------------------------------------------

    def backend(self, name: str) -> ExportBackend | None:
        for run in self.runs.values():
            if name in run.images and run.spec.state == "running":
                return run.images[name][1]
        return None

    def names(self) -> list[str]:
        return [name for run in self.runs.values() if run.spec.state == "running"
                for name in run.images]

    # --- requests -----------------------------------------------------------------------

    async def start(self, operation_id: str, group_id: str, checkpoint: str) -> dict[str, Any]:
        async with self._lock:
            return await self._start(operation_id, group_id, checkpoint)

    async def _start(self, operation_id: str, group_id: str, checkpoint: str) -> dict[str, Any]:
        host = self._host
        group = host.recovery_group(group_id)
        if group.spec.live is not None:
            raise Conflict(f"group {group.spec.name} is already failed over live here "
                           f"(operation {group.spec.live.operation_id})")
        if self._drills.running_on(group):
            raise Conflict(f"group {group.spec.name} has a failover test running here: "
                           "stop it first")
        info = group.resolve_checkpoint(checkpoint)
        taken = set(host.names())
        images = {v.name: v.name if v.name not in taken else f"{group.spec.name}.{v.name}"
                  for v in group.spec.volumes}
        clash = sorted(set(images.values()) & taken)
        if clash:
            raise Conflict(f"this agent already serves {', '.join(clash)}: cannot name the "
                           "live images")
        group.spec.live = LiveFailoverSpec(operation_id=operation_id, checkpoint_seq=info.seq,
                                           images=images)
        host.save_state()
        run = LiveRun(group)
        try:
            host.end_replication_session(group_id)
            async with group.lock:  # the session, if one ran, has ended: no more appends
                await group.stop()
            self._open_images(run)
        except BaseException:
            self._close_images(run, discard=True)
            group.spec.live = None
            host.save_state()
            group.start()
            raise
        self.runs[operation_id] = run
        return self.describe(run)

    def running(self, operation_id: str) -> LiveRun:
        """The live failover ``operation_id``, while its images are served."""
        run = self._run(operation_id)
        if run.spec.state != "running":
            raise Conflict(f"operation {operation_id} is {run.spec.state}")
        return run

    def status(self, operation_id: str) -> dict[str, Any]:
        if operation_id in self.committed:
            return self.committed[operation_id]
        return self.describe(self._run(operation_id))

    async def rollback(self, operation_id: str) -> dict[str, Any]:
        async with self._lock:
            return self._rollback(operation_id)

    def _rollback(self, operation_id: str) -> dict[str, Any]:
        run = self._run(operation_id)
        if run.spec.state != "running":
            raise Conflict(f"operation {operation_id} is {run.spec.state}: it cannot roll back")
        description = self.describe(run)
        self._close_images(run, discard=True)
        shutil.rmtree(self._live_dir(run.group), ignore_errors=True)
        del self.runs[operation_id]
        run.group.spec.live = None
        self._host.save_state()
        run.group.start()  # retention again; the receiver takes the group's sessions again
        description["state"] = "rolled-back"
        return description

    def commit(self, operation_id: str) -> dict[str, Any]:
        run = self._run(operation_id)
        if run.commit_task is None or (run.commit_task.done() and run.error):
            run.spec.state = "committing"
            self._host.save_state()
            for name in run.images:
                self._host.disconnect_export(name)
            run.error = None
            run.commit_task = asyncio.create_task(self._commit(operation_id, run))
        return self.describe(run)

    # --- agent start and stop -------------------------------------------------------------

    def resume(self, group: RecoveryGroup) -> None:
        """At agent start, for a recovery group saved with ``live`` (already opened)."""
        live = group.spec.live
        assert live is not None
        run = LiveRun(group)
        self._open_images(run)
        self.runs[live.operation_id] = run
        if live.state == "committing":
            self.commit(live.operation_id)

    def finish_consolidated(self, spec: RecoverySpec) -> None:
        """At agent start: a commit got past consolidation; only the bookkeeping is left."""
        assert spec.live is not None
        self._register_volumes(spec)
        log.info("live failover %s of group %s: commit finished after a restart",
                 spec.live.operation_id, spec.name)

    async def release_all(self) -> None:
        """Agent stop: keep every image on disk (flushed), to be served again at start."""
        for run in self.runs.values():
            if run.commit_task is not None:
                run.commit_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, SeawallError, OSError):
                    await run.commit_task
            self._close_images(run, discard=False)
        self.runs.clear()

    # --- helpers ------------------------------------------------------------------------

    def _run(self, operation_id: str) -> LiveRun:
        run = self.runs.get(operation_id)
        if run is None:
            raise NotFound(f"no live failover {operation_id} at this agent")
        return run

    def _live_dir(self, group: RecoveryGroup) -> Path:
        return group.directory / "live"

    def _open_images(self, run: LiveRun) -> None:
        live, group = run.spec, run.group
        directory = self._live_dir(group)
        directory.mkdir(parents=True, exist_ok=True)
        for volume in group.spec.volumes:
            view = group.journal.view(volume.index, live.checkpoint_seq)
            try:
                image = LiveImage(live.images[volume.name], view, directory, volume.name)
            except BaseException:
                view.close()
                raise
            run.images[image.info.name] = (volume.name, image)

    def _close_images(self, run: LiveRun, discard: bool) -> None:
        for name, (_, image) in run.images.items():
            self._host.disconnect_export(name)
            if discard:
                image.close()
            else:
                image.release()
        run.images.clear()

    async def _commit(self, operation_id: str, run: LiveRun) -> None:
        group = run.group
        try:
            for volume, image in run.images.values():
                replica = replica_path(group.spec, group.directory, volume)
                await asyncio.to_thread(image.consolidate, group.journal, replica)
            run.spec.state = "consolidated"
            self._host.save_state()
            self._register_volumes(group.spec)
            self.committed[operation_id] = {**self.describe(run), "state": "committed"}
            self.runs.pop(operation_id, None)
        except (OSError, SeawallError) as exc:
            run.error = str(exc)
            log.error("live failover %s: commit failed (it can be retried): %s",
                      operation_id, exc)

    def _register_volumes(self, spec: RecoverySpec) -> None:
        """Replicas become volumes of this agent; the recovery group is forgotten."""
        host, live = self._host, spec.live
        assert live is not None
        directory = host.group_dir(spec)
        host.close_recovery(spec.group_id)
        volumes, kept = [], False
        for volume in spec.volumes:
            name, replica = live.images[volume.name], replica_path(spec, directory, volume.name)
            path = replica if volume.name in spec.replica_paths else (
                self._config.volumes_dir / f"{name}.raw")
            if path != replica and replica.exists():
                if path.exists():
                    raise Conflict(f"cannot commit: {path} exists already")
                try:
                    os.rename(replica, path)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    path, kept = replica, True  # another file system: it stays where it is
            volumes.append(SavedVolume(name=name, path=path, size_bytes=volume.size_bytes,
                                      owned=path.parent == self._config.volumes_dir))
        host.recovery_to_volumes(spec.group_id, volumes)  # the commit point
        for leftover in (("journal", "live") if kept else ("",)):
            shutil.rmtree(directory / leftover, ignore_errors=True)

    def describe(self, run: LiveRun) -> dict[str, Any]:
        live, config = run.spec, self._config
        images = []
        for name, (volume, image) in run.images.items():
            images.append({"volume": volume, "name": name, "size_bytes": image.info.size_bytes,
                           "uri": f"nbd+unix:///{name}?socket={config.nbd_socket}",
                           "changed_extents": image.overlay.changed_extent_count,
                           "scratch_used_bytes": image.overlay.used_bytes})
        vms = sorted({c.name for c in
                      run.group.journal.vm_configs_at(live.checkpoint_seq).values()})
        return {"operation_id": live.operation_id, "group_id": run.group.spec.group_id,
                "group": run.group.spec.name, "checkpoint_id": live.checkpoint_seq,
                "state": live.state, "error": run.error, "images": images, "vms": vms}

    def list_all(self) -> list[dict[str, Any]]:
        return [self.describe(run) for run in self.runs.values()]

