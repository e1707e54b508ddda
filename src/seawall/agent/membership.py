"""Changing what an agent protects or keeps: a group's members, a group, a volume, removed.

Rules and invariants:
- Every change is saved in ``agent/state.json`` before it is answered, as every operation
  of the agent (``seawall.agent.service``).
- Protected side: members change in place (``ProtectedGroup.change_volumes``): the other
  members keep streaming, a new one is shipped whole in a sync window. A member keeps its
  index; a new one has an index the group never used (given by the recovery site, checked
  here). A member of a group spanning agents keeps its hold's gate on exactly its volumes
  (``CoordinatedGroups.follow_volumes``); its lead takes a new member list in place
  (``set_coordination``: the rounds restart with it).
- Recovery side: a member removed becomes *retired* (``recover.members``): its replica and
  journal entries stay until the group goes, and it reads back at the checkpoints that
  include it (up to its ``removed_after_seq``). A new member needs its replica before its
  first record: the
  journal is closed and opened again with it (the index is rebuilt from the segments: the
  journal stays the truth). The replication session ends meanwhile (the group is out of
  the receiver's lookup, then its lock is taken, so no session runs on a closed journal),
  and the sender reconnects by itself. Refused while a failover test, a live failover or
  an export runs on the group: each holds the journal open.
- Removing a recovered group is refused for the same failovers (named in the error);
  exports of it are stopped. With ``keep_replicas`` the journal is first applied up to its
  newest consistent checkpoint (or the one the manager names: a member journal's marker
  of the group's newest checkpoint), so each member's replica is that checkpoint's image;
  the replicas are then moved to ``<storage>/<group>-replicas/`` (``.2``... if names
  clash; a pre-seeded replica stays where the operator put it). A failed apply changes
  nothing: the group is opened again. The state save that forgets the group is the commit point:
  a crash after it leaves at most the group's directory behind, never a half group.
- A volume in a group is not removed (the error names the group). A volume made by
  ``volume create`` (``owned``) has its file deleted; an added file or device is only
  forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from seawall.agent.failover.drills import FailoverTests
from seawall.agent.failover.source import SourceFailover
from seawall.agent.images.exports import ExportRegistry
from seawall.agent.protect.coordination import CoordinatedGroups
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.shipper import Shipper
from seawall.agent.protect.sink import ProtectedVolume, SinkVolume
from seawall.agent.protect.splitter import Splitter
from seawall.agent.protect.vm_watch import VmWatch
from seawall.agent.recover import members
from seawall.agent.recover.group import RecoveryGroup, replica_path
from seawall.agent.recover.receiver import ReplicationServer
from seawall.agent.state import AgentState
from seawall.config import SiteConfig
from seawall.contract.agent import (
    Coordination,
    GroupVolume,
    RecoveryMembers,
    RecoverySpec,
    RetiredVolume,
)
from seawall.errors import Conflict, InvalidInput, NotFound, NotReady, SeawallError
from seawall.hypervisor.base import Hypervisor

KEPT_SUFFIX = "-replicas"


def check_kept_indexes(old: list[GroupVolume], new: list[GroupVolume],
                       retired: list[RetiredVolume] | None = None) -> None:
    """A member kept keeps its index, name and size; a new one takes an unused index."""
    known = {v.index: (v.name, v.size_bytes) for v in [*old, *(retired or [])]}
    names = [v.name for v in new]
    if len(set(names)) != len(names) or len({v.index for v in new}) != len(new):
        raise InvalidInput("a volume is named twice, or two volumes share an index")
    for volume in new:
        was = known.get(volume.index)
        if was is not None and was != (volume.name, volume.size_bytes):
            raise Conflict(f"index {volume.index} is volume {was[0]!r} of the group, not "
                           f"{volume.name!r}: a new member needs a new index")


class MembershipHost(Protocol):
    """The agent (``seawall.agent.service.Agent``), as these changes use it."""

    config: SiteConfig
    state: AgentState
    volumes: dict[str, ProtectedVolume]
    hypervisor: Hypervisor | None
    splitters: dict[str, Splitter]
    protected: dict[str, tuple[ProtectedGroup, Shipper]]
    vm_watches: dict[str, VmWatch]
    recovering: dict[str, RecoveryGroup]
    exports: ExportRegistry
    coordinated: CoordinatedGroups
    failover_tests: FailoverTests
    source: SourceFailover
    replication: ReplicationServer

    def save_state(self) -> None: ...

    def describe_volume(self, name: str) -> dict[str, Any]: ...

    def group_status(self, group_id: str) -> dict[str, Any]: ...

    def protected_group(self, group_id: str) -> ProtectedGroup: ...

    def recovery_group(self, group_id: str) -> RecoveryGroup: ...

    def group_dir(self, spec: RecoverySpec) -> Path: ...

    def open_recovery(self, spec: RecoverySpec) -> None: ...

    def end_replication_session(self, group_id: str) -> None: ...

    def disconnect_export(self, name: str) -> None: ...

    def stop_export(self, name: str) -> dict[str, Any]: ...


class Membership:
    def __init__(self, agent: MembershipHost) -> None:
        self.agent = agent

    # --- protected side ------------------------------------------------------------------

    async def change_protected(self, group_id: str,
                               volumes: list[GroupVolume]) -> dict[str, Any]:
        agent = self.agent
        group = agent.protected_group(group_id)
        if group.spec.fenced:
            raise Conflict(f"group {group.spec.name} is failed over: its members cannot change")
        check_kept_indexes(group.spec.volumes, volumes)
        current = {v.name for v in group.spec.volumes}
        for volume in volumes:
            if volume.name in current:
                continue
            found = agent.describe_volume(volume.name)  # NotFound for an unknown one
            if found["group"] is not None:
                raise Conflict(f"volume {volume.name} is already in group {found['group']}")
            if found["size"] != volume.size_bytes:
                raise Conflict(f"volume {volume.name} has {found['size']} bytes, not "
                               f"{volume.size_bytes}")
        before = list(group.volumes)
        files = [agent.volumes[v.name] for v in volumes]
        splitter = agent.splitters.get(group_id)
        if splitter is None and agent.hypervisor is not None and \
                any(isinstance(file, SinkVolume) for file in files):
            # Before the change: it asks the splitter to copy the new sinks.
            splitter = agent.splitters[group_id] = Splitter(group, agent.hypervisor,
                                                            agent.config.nbd_socket)
            splitter.start()
        last_seq = group.change_volumes(volumes, files)
        gone = [v for v in before if v not in group.volumes]
        agent.coordinated.follow_volumes(group_id, gone)
        agent.save_state()  # the spec is the saved one, changed in place
        if splitter is not None:  # their VMs keep running, untouched
            await splitter.detach([v for v in gone if isinstance(v, SinkVolume)])
            if not group.mirrors.sinks:
                await agent.splitters.pop(group_id).stop(detach=False)
        await self._follow_vm_watch(group)
        return {"group_id": group_id, "last_seq": last_seq}

    async def _follow_vm_watch(self, group: ProtectedGroup) -> None:
        """A group with sinks has a VM watch (its VMs' configurations), one without none."""
        agent, group_id = self.agent, group.spec.group_id
        watch = agent.vm_watches.get(group_id)
        if group.mirrors.sinks and watch is None and agent.hypervisor is not None:
            watch = agent.vm_watches[group_id] = VmWatch(group, agent.hypervisor,
                                                         agent.config.vm_config_check_s)
            watch.start()
        elif not group.mirrors.sinks and watch is not None:
            await agent.vm_watches.pop(group_id).stop()

    async def set_coordination(self, group_id: str,
                               coordination: Coordination) -> dict[str, Any]:
        """A group spanning agents gained a member agent: its lead's rounds include it from
        now on (a round under way is given up, as when the lead restarts)."""
        agent = self.agent
        group = agent.protected_group(group_id)
        if group.spec.coordination is None or group.spec.coordination.group_id != \
                coordination.group_id:
            raise Conflict(f"group {group.spec.name} is not part of group "
                           f"{coordination.group_id} spanning agents here")
        await agent.coordinated.remove(group_id)
        group.spec.coordination = coordination
        agent.save_state()
        agent.coordinated.add(group)
        return agent.group_status(group_id)

    async def unprotect(self, group_id: str) -> dict[str, Any]:
        """Stop protecting the group here and forget it; its volumes stay, served as before."""
        agent = self.agent
        entry = agent.protected.pop(group_id, None)
        if entry is None:
            raise NotFound(f"group {group_id} is not protected by this agent")
        group, shipper = entry
        splitter = agent.splitters.pop(group_id, None)
        if splitter is not None:  # the VMs keep running, untouched, their mirrors ended
            await splitter.stop(detach=True)
        await agent.coordinated.remove(group_id)
        watch = agent.vm_watches.pop(group_id, None)
        if watch is not None:
            await watch.stop()
        await shipper.stop()
        await group.stop()
        if group.spec.fenced:  # stopped for a failover: its volumes take writes again
            agent.source.set_read_only(group, False)
        agent.state.protected = [p for p in agent.state.protected if p.group_id != group_id]
        agent.save_state()
        shutil.rmtree(agent.config.agent_dir / "groups" / group_id, ignore_errors=True)
        return {"group_id": group_id}

    # --- recovery side -------------------------------------------------------------------

    def _busy(self, group: RecoveryGroup, what: str) -> None:
        """Refuse ``what`` while a failover holds the group's journal."""
        name = group.spec.name
        if group.spec.live is not None:
            raise Conflict(f"a live failover of group {name} runs "
                           f"({group.spec.live.operation_id}): {what} after its commit or "
                           "rollback")
        if self.agent.failover_tests.running_on(group):
            raise Conflict(f"a failover test of group {name} runs: {what} once it is "
                           "stopped (`seawall failover stop`)")

    async def change_recovery(self, group_id: str, request: RecoveryMembers) -> dict[str, Any]:
        agent = self.agent
        group = agent.recovery_group(group_id)
        spec = group.spec
        self._busy(group, f"change the members of group {spec.name}")
        changed = members.change(spec, request, group.journal.written_seq)
        new = changed.spec
        if not changed.reopen:  # retired, or settled: the journal holds the same volumes
            for field in ("volumes", "retired", "added_after_seq", "unsettled"):
                setattr(spec, field, getattr(new, field))
            agent.save_state()
            return {"group_id": group_id, "volumes": spec.volumes}
        exports = [name for name, r in agent.exports.exports.items() if r.group_id == group_id]
        if exports:
            raise Conflict(f"exports of group {spec.name} are open ({', '.join(exports)}): "
                           "stop them first (`seawall export --stop URI`)")
        directory = agent.group_dir(spec)
        await self._close(group)
        try:
            agent.open_recovery(new)
        except Exception:
            agent.open_recovery(spec)  # as it was: its replicas and journal are untouched
            raise
        for volume in changed.forgotten:  # never written: the journal holds nothing of it
            with contextlib.suppress(FileNotFoundError):
                replica_path(spec, directory, volume.name).unlink()
        agent.state.recovering = [new if s.group_id == group_id else s
                                  for s in agent.state.recovering]
        agent.save_state()
        return {"group_id": group_id, "volumes": new.volumes}

    async def _close(self, group: RecoveryGroup) -> None:
        """Take ``group`` out of the agent (no new session finds it), end its session and
        wait for it, stop retention and close the journal."""
        agent = self.agent
        agent.recovering.pop(group.spec.group_id, None)
        agent.end_replication_session(group.spec.group_id)
        async with group.lock:
            await group.stop()
            group.close()

    async def remove_recovery(self, group_id: str, keep_replicas: bool,
                              checkpoint_seq: int | None = None) -> dict[str, Any]:
        """Forget the group here with its journal; ``keep_replicas``: its replicas, made the
        image of checkpoint ``checkpoint_seq`` first (its newest consistent one if None; a
        member journal of a group spanning agents is given its marker of the group's
        newest checkpoint, so that every member's kept replica is of the same one)."""
        agent = self.agent
        group = agent.recovery_group(group_id)
        spec = group.spec
        self._busy(group, f"delete group {spec.name}")
        for name in [n for n, r in agent.exports.exports.items() if r.group_id == group_id]:
            agent.stop_export(name)
        directory = agent.group_dir(spec)
        checkpoint = None
        agent.recovering.pop(group_id, None)
        agent.end_replication_session(group_id)
        async with group.lock:
            await group.stop()
            failed = None
            if keep_replicas:
                try:
                    checkpoint = (group.journal.latest_checkpoint().seq if checkpoint_seq is None
                                  else group.journal.checkpoint(checkpoint_seq).seq)
                except NotReady:
                    checkpoint = None  # none consistent yet: kept as replicated
                except SeawallError as exc:
                    failed = exc
                try:
                    if checkpoint is not None:  # the replicas become its image
                        await asyncio.to_thread(group.journal.apply_through, checkpoint)
                except SeawallError as exc:
                    failed = exc
            group.close()
        if failed is not None:
            agent.open_recovery(spec)  # nothing forgotten: the group goes on
            raise failed
        agent.state.recovering = [s for s in agent.state.recovering if s.group_id != group_id]
        agent.save_state()  # the commit point
        agent.replication.trust_only([g.spec.source_cert_pem for g in agent.recovering.values()
                                      if g.spec.source_cert_pem])
        kept = _keep(spec, directory) if keep_replicas else {}
        shutil.rmtree(directory, ignore_errors=True)
        for name, path in spec.replica_paths.items():  # pre-seeded: the operator's files
            if not keep_replicas and name in {v.name for v in spec.volumes}:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return {"group_id": group_id, "kept": kept, "checkpoint": checkpoint}

    # --- volumes -------------------------------------------------------------------------

    def remove_volume(self, name: str) -> dict[str, Any]:
        agent = self.agent
        current = agent.describe_volume(name)  # NotFound for an unknown one
        if current["group"] is not None:
            raise Conflict(f"volume {name} is in group {current['group']}: remove it from the "
                           f"group first (`seawall group update {current['group']} "
                           f"--remove-volume {name}`)")
        saved = next(v for v in agent.state.volumes if v.name == name)
        agent.disconnect_export(name)
        agent.volumes.pop(name).close()
        agent.state.volumes = [v for v in agent.state.volumes if v.name != name]
        agent.save_state()
        if saved.owned and saved.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(saved.path)
        return {"name": name, "path": str(saved.path), "deleted": saved.owned}


def _keep(spec: RecoverySpec, directory: Path) -> dict[str, str]:
    """Move each member's replica out of the group's directory; where each is now: in
    ``<group>-replicas`` next to it (``.2``, ``.3``, ... if a file there has the name)."""
    moved = [volume for volume in spec.volumes if volume.name not in spec.replica_paths]
    target = directory.parent / f"{spec.name}{KEPT_SUFFIX}"
    suffix = 1
    while any((target / f"{volume.name}.raw").exists() for volume in moved):
        suffix += 1
        target = directory.parent / f"{spec.name}{KEPT_SUFFIX}.{suffix}"
    kept = {name: str(path) for name, path in spec.replica_paths.items()
            if name in {volume.name for volume in spec.volumes}}
    for volume in moved:
        source = replica_path(spec, directory, volume.name)
        target.mkdir(parents=True, exist_ok=True)
        os.rename(source, target / source.name)
        kept[volume.name] = str(target / source.name)
    return kept
