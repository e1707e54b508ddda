"""A group's members changed, and a group deleted, at both sites.

Both are asked of the group's protected site; the recovery site follows over the peer API
(which takes them only from the group's protected site, known by its pinned certificate).

Order of a change of members (``update``):

1. Check everything here (``member_changes``): the group is protected here, each volume
   to add exists and is in no group, each volume to remove is a member, some volume is
   left (else: ``group delete``). A refusal changes nothing anywhere.
2. The recovery site first (``members_from_peer``), stream by stream: its agent gives each
   new volume an index the stream never used and makes its replica; a removed one is
   retired there (its history stays readable at the checkpoints that include it until
   they age out). Unreachable or refusing: what it took is taken back, nothing changed.
3. This site's agents change each stream in place (``ProtectedGroup.change_volumes``): a
   new volume gets its initial sync in a sync window while the others keep replicating.
   If one fails, every stream is put back at both sites (an added volume whose first
   records reached the recovery site already cannot be forgotten there: it is retired,
   in no checkpoint, and ages out).
4. The recovery site is told each stream's last seq at the change, which settles which
   checkpoints include the changed volumes; if it cannot be told, the change stands and
   the answer warns that checkpoints near the change may list them wrongly until a later
   change settles them (``RecoverySpec.unsettled``).
5. This site stores the new members (both sites compute the same stored list through
   ``members.stored_after``).

Groups spanning agents, besides the same steps for each member stream that changes:
- A volume on an agent that is not a member makes it one: a new stream (numbered after
  every one the group ever had) whose journal the recovery site makes, started at its
  agent, pinned at it for the lead, and added to the lead's rounds (``set_coordination``).
  The group checkpoints up to the lead journal's durable seq at step 2 (``joined_after``)
  do not need the new member's marker, so the older ones stay offered.
- Removing a member agent's last volumes ends it: out of the lead's rounds, then no longer
  protected at its agent; its volumes stay stored, marked ``ended_after`` (the lead's seq
  then; the lead journal's durable seq until step 4 says it), and its journal stays at
  the recovery site for the group checkpoints up to it. The lead's last volume cannot go.

A change may be given ``settle``, called once every stream changed at its agent (after
step 3): raising fails the change as a failed step 3 does (every stream put back at both
sites). ``groups.vm_groups`` waits there for the mirrors of the VM disks it adds.

Order of a delete (``delete``): the recovery site first (it refuses while a failover test,
failover live or move of the group runs, naming it; it removes its journals and replicas,
or keeps each member volume's replica as a plain raw file at the group's newest
checkpoint, and forgets the group); then this site's agents stop protecting and this site
forgets the group. An unreachable recovery site: the command says so and nothing changes.
A recovery site that no longer has the group (a delete cut short after it) counts as done,
so running the same command again finishes it. The event log has it (``delete group``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from seawall.config import SiteConfig
from seawall.contract.agent import (
    GroupVolume,
    NewVolume,
    ProtectedMembers,
    RecoveryMembers,
    RecoverySpec,
)
from seawall.contract.agent_api import AgentApi
from seawall.errors import Conflict, InvalidInput, NotFound, SeawallError
from seawall.http import JsonClient
from seawall.manager.clients import peer_client
from seawall.manager.groups.member_changes import StreamChange, plan_change, stream_changes
from seawall.manager.groups.members import (
    current,
    ended,
    is_spanning,
    members_of,
    stored_after,
)
from seawall.manager.groups.service import GroupService, Locate, describe
from seawall.manager.groups.settings import (
    check,
    options_of,
    protection_settings,
    retention_settings,
)
from seawall.manager.models import Group, Peer
from seawall.manager.recovery.store import OperationStore

Settle = Callable[[list[tuple[JsonClient, str]]], None]
"""Called with the group's streams once each changed at its agent; raising fails the change."""

log = logging.getLogger(__name__)

UNSETTLED = 0
"""An ending member's ``ended_after`` until the lead's seq is known (never stored)."""

_OPERATIONS = {"failover-test": "failover test", "failover-live": "failover live",
               "move": "move (a failover live)"}


class GroupMembership:
    def __init__(self, config: SiteConfig, groups: GroupService, operations: OperationStore,
                 locate: Locate) -> None:
        self.config = config
        self.groups = groups
        self.operations = operations
        self.locate = locate

    # --- members -------------------------------------------------------------------------

    def update(self, name: str, add: list[str], remove: list[str],
               settle: Settle | None = None) -> dict[str, Any]:
        group, peer = self.protected_here(name, "change its members")
        kept = plan_change(current(group.volumes), add, remove, name)
        new = self._new_volumes(add)
        check(options_of(group), [v["name"] for v in kept] + add, peer.name)
        changes = stream_changes(group, {v["name"] for v in kept}, new, self.config.name)
        told: list[StreamChange] = []
        try:
            for change in changes:
                answer = self._tell_peer(peer, name, change.request(), change.member,
                                         self._joining(change), end_member=change.ending)
                change.volumes = [GroupVolume.model_validate(v) for v in answer["volumes"]]
                change.joined_after = answer.get("joined_after")
                told.append(change)
        except SeawallError:
            self._take_back(peer, name, told)
            raise
        stored = group.volumes
        for change in changes:
            if change.ending:  # left in the list, marked: old checkpoints need them
                stored = ended(stored, change.stream, UNSETTLED)
                continue
            stored = stored_after(stored, change.member, change.agent,
                                  [v.model_dump() for v in change.volumes],
                                  change.joined_after)
        last_seqs = self._change_protected(group, peer, changes, stored, settle)
        warnings = []
        for change in changes:
            if change.new_member:  # a journal of its own: nothing before it to settle
                continue
            seq = last_seqs[change.stream]
            if change.ending:
                stored = ended(stored, change.stream, seq)
            try:
                self._tell_peer(peer, name, RecoveryMembers(
                    volumes=change.volumes, changed_after_seq=None if change.ending else seq),
                    change.member, ended_after=seq if change.ending else None)
            except SeawallError as exc:
                warnings.append(f"the recovery site was not told where the change lies in "
                                f"the stream ({exc.message}): its checkpoints from before "
                                "the change list the changed volumes until the next change")
        self._store(group, stored)
        return {**describe(group, peer.name), "added": add, "removed": remove,
                "warnings": warnings}

    def _joining(self, change: StreamChange) -> dict[str, str] | None:
        """What the recovery site needs of a new member agent: its name and certificate."""
        if not change.new_member:
            return None
        return {"agent": change.agent, "cert_pem": self.groups.spanning.cert_of(change.agent)}

    def _change_protected(self, group: Group, peer: Peer, changes: list[StreamChange],
                          stored: list[dict[str, Any]],
                          settle: Settle | None = None) -> dict[str, int]:
        """Each stream's change at its protected agent (a new member started, then the
        lead's rounds told of it); the last seq of each existing stream at its change. A
        failure puts every stream back as it was, at both sites."""
        clients = {stream: client for client, stream in self.groups.streams(group)}
        last_seqs: dict[str, int] = {}
        started: list[StreamChange] = []
        members = members_of(stored)
        ending = [change for change in changes if change.ending]
        led = False
        try:
            for change in changes:
                if change.new_member:
                    index = [m.group_id for m in members].index(change.stream)
                    self.groups.spanning.start_member(
                        group.group_id, group.name, members, index, self._target(group, peer))
                    started.append(change)
                elif not change.ending:
                    last_seqs[change.stream] = AgentApi(clients[change.stream]) \
                        .change_protected_members(change.stream, ProtectedMembers(
                            volumes=change.volumes)).last_seq
            if started or ending:
                lead_seq = self._pin_and_lead(group, stored)
                led = True
                for change in ending:  # out of the rounds: the group's checkpoints after
                    last_seqs[change.stream] = lead_seq  # the lead's seq do not need it
                    AgentApi(clients[change.stream]).unprotect(change.stream)
            if settle is not None:
                settle([(clients.get(change.stream)
                         or self.groups.spanning.client(change.agent), change.stream)
                        for change in changes if not change.ending])
        except SeawallError:  # all or nothing: every stream as it was, at both sites
            for change in changes:
                with contextlib.suppress(SeawallError):
                    if change in started:
                        AgentApi(self.groups.spanning.client(change.agent)).unprotect(
                            change.stream)
                    elif change.stream in last_seqs and not change.ending:
                        AgentApi(clients[change.stream]).change_protected_members(
                            change.stream, ProtectedMembers(volumes=change.old))
            if led:
                with contextlib.suppress(SeawallError):
                    self._pin_and_lead(group, group.volumes)
            self._take_back(peer, name=group.name, changes=changes)
            raise
        return last_seqs

    def _pin_and_lead(self, group: Group, stored: list[dict[str, Any]]) -> int:
        """Let the lead call every member of ``stored`` (pins), and have it do so from now
        on; the lead stream's last seq then: its rounds after it are with these members."""
        with self.groups.sessions() as session:
            others = [g.volumes for g in session.scalars(select(Group))
                      if g.role == "protected" and g.group_id != group.group_id]
        self.groups.spanning.refresh_pins([*others, stored])
        members = members_of(stored)
        lead = members[0]
        status = AgentApi(self.groups.spanning.client(lead.agent)).set_coordination(
            lead.group_id, self.groups.spanning.coordination(group.group_id, members, lead=True))
        return int((status.model_extra or {}).get("last_seq") or 0)

    def _target(self, group: Group, peer: Peer) -> dict[str, Any]:
        """Where a new member stream ships, with the group's protection settings."""
        return {"target_host": peer.replication_host, "target_port": peer.replication_port,
                "target_cert_pem": self.groups.sites.pinned_cert(peer),
                **protection_settings(options_of(group))}

    def _take_back(self, peer: Peer, name: str, changes: list[StreamChange]) -> None:
        """Tell the recovery site each stream's old members again, a new member's journal
        gone (best effort: it was reachable a moment ago)."""
        for change in changes:
            with contextlib.suppress(SeawallError):
                if change.new_member:
                    self._tell_peer(peer, name, RecoveryMembers(volumes=[]), change.member,
                                    forget_member=True)
                elif change.ending:
                    self._tell_peer(peer, name, RecoveryMembers(volumes=change.old),
                                    change.member, resume_member=True)
                else:
                    try:
                        self._tell_peer(peer, name, RecoveryMembers(
                            volumes=change.old, forget=[v.name for v in change.added]),
                            change.member)
                    except SeawallError as exc:  # then retired: its history ages out
                        log.warning("group %s: additions not forgotten at the recovery site "
                                    "(%s): retired instead", name, exc.message)
                        self._tell_peer(peer, name, RecoveryMembers(volumes=change.old),
                                        change.member)

    def _store(self, group: Group, stored: list[dict[str, Any]]) -> None:
        with self.groups.sessions.begin() as session:
            row = session.get(Group, group.group_id)
            if row is None:
                raise NotFound(f"no group {group.name!r}")
            row.volumes = stored
        group.volumes = stored

    def _new_volumes(self, names: list[str]) -> list[tuple[str, NewVolume]]:
        """Each volume to add, with its agent (NotFound or Conflict before any change)."""
        if not names:
            return []
        located = self.locate(names)  # NotFound names the unknown ones
        new = []
        for name in names:
            agent, volume = located[name]
            if volume.get("group"):
                raise Conflict(f"volume {name!r} is already in group {volume['group']!r}")
            new.append((agent, NewVolume(name=name, size_bytes=volume["size"])))
        return new

    def members_from_peer(self, name: str, source_site_id: str, request: RecoveryMembers,
                          member: str | None = None, joining: dict[str, str] | None = None,
                          *, forget_member: bool = False, end_member: bool = False,
                          resume_member: bool = False,
                          ended_after: int | None = None) -> dict[str, Any]:
        """At the recovery site: the members the group's protected site asks for (of its
        member stream ``member``, in a group spanning agents; ``joining``: a new member
        agent's name and certificate, whose journal is made; ``forget_member``: a new
        member's journal taken back)."""
        group = self._recovered_for(name, source_site_id)
        if member is None:
            answer = self.groups.agent_api.change_recovery_members(group.group_id, request)
            volumes = [v.model_dump() for v in answer.volumes]
            self._store(group, stored_after(group.volumes, None, self.config.name, volumes))
            return {"volumes": volumes}
        owners = {v.get("member"): v.get("agent") for v in group.volumes}
        if not is_spanning(group.volumes) or (member in owners) == (joining is not None):
            raise NotFound(f"group {name} has {'a' if member in owners else 'no'} member "
                           f"stream {member!r}")
        if forget_member:
            with contextlib.suppress(NotFound):
                self.groups.agent_api.remove_recovery(member, keep_replicas=False)
            self._store(group, [v for v in group.volumes if v.get("member") != member])
            return {"volumes": []}
        if end_member or resume_member or ended_after is not None:
            # A member ends: until the protected site says after which of the lead's seqs,
            # the lead journal's durable seq now bounds it (a few checkpoints in between
            # then leave its volumes out); taken back, it is a member again.
            if end_member:
                lead = members_of(group.volumes)[0]
                status = self.groups.agent_api.group_status(lead.group_id)
                ended_after = int((status.model_extra or {}).get("durable_seq") or 0)
            self._store(group, ended(group.volumes, member,
                                     None if resume_member else ended_after))
            return {"volumes": []}
        if joining is not None:
            return self._member_joins(group, source_site_id, member, joining, request)
        answer = self.groups.agent_api.change_recovery_members(member, request)
        volumes = [v.model_dump() for v in answer.volumes]
        self._store(group, stored_after(group.volumes, member, str(owners[member]), volumes))
        return {"volumes": volumes}

    def _member_joins(self, group: Group, source_site_id: str, member: str,
                      joining: dict[str, str], request: RecoveryMembers) -> dict[str, Any]:
        """A journal for a new member stream; the group checkpoints up to the lead
        journal's durable seq now were taken without the member (a lower bound of the
        lead's seq when the member joins its rounds)."""
        options = options_of(group)
        volumes = [GroupVolume(index=n, name=v.name, size_bytes=v.size_bytes)
                   for n, v in enumerate(request.added)]
        if not volumes:
            raise InvalidInput(f"a new member of group {group.name} needs a volume")
        lead = members_of(group.volumes)[0]
        status = self.groups.agent_api.group_status(lead.group_id)
        joined_after = int((status.model_extra or {}).get("durable_seq") or 0)
        self.groups.agent_api.recover(RecoverySpec(
            group_id=member, name=group.name, source_site=source_site_id,
            source_cert_pem=joining["cert_pem"], volumes=volumes,
            **retention_settings(options),
            storage_dir=Path(options.storage_path) if options.storage_path else None))
        dumped = [v.model_dump() for v in volumes]
        self._store(group, stored_after(group.volumes, member, joining["agent"], dumped,
                                        joined_after))
        return {"volumes": dumped, "joined_after": joined_after}

    def _tell_peer(self, peer: Peer, name: str, request: RecoveryMembers,
                   member: str | None = None, joining: dict[str, str] | None = None, *,
                   forget_member: bool = False, end_member: bool = False,
                   resume_member: bool = False,
                   ended_after: int | None = None) -> dict[str, Any]:
        remote = peer_client(self.config, peer)
        try:
            answer: dict[str, Any] = remote.put(f"/api/v1/peer/groups/{name}/volumes", {
                **request.model_dump(mode="json"), "member": member, "new_member": joining,
                "forget_member": forget_member, "end_member": end_member,
                "resume_member": resume_member, "ended_after": ended_after})
        finally:
            remote.close()
        return answer

    # --- delete --------------------------------------------------------------------------

    def delete(self, name: str, keep_replicas: bool) -> dict[str, Any]:
        group, peer = self.protected_here(name, "delete it")
        remote = peer_client(self.config, peer)
        try:
            recovery: dict[str, Any] = remote.request(
                "DELETE", f"/api/v1/peer/groups/{name}",
                params={"keep_replicas": "true"} if keep_replicas else None)
        except NotFound:  # gone there already: a delete cut short after that step
            recovery = {"kept": {}, "checkpoint": None, "already_removed": True}
        finally:
            remote.close()
        for agent, stream in self.groups.streams(group):
            with contextlib.suppress(NotFound):  # stopped already (a delete cut short)
                AgentApi(agent).unprotect(stream)  # a VM's mirrors end; the VM runs on
        self._forget(group.group_id)
        self.groups.vm_sinks.remove(self.groups.vm_sinks.in_volumes(
            [v["name"] for v in current(group.volumes)]))
        if is_spanning(group.volumes):
            self.groups.refresh_pins()
        return {"name": name, "recovery_site": peer.name,
                "kept_replicas": recovery.get("kept", {}),
                "checkpoint": recovery.get("checkpoint"),
                "recovery_already_removed": bool(recovery.get("already_removed"))}

    def delete_from_peer(self, name: str, source_site_id: str,
                         keep_replicas: bool) -> dict[str, Any]:
        """At the recovery site: remove the group, its journal and replicas (or keep them)."""
        group = self._recovered_for(name, source_site_id)
        holder = self.operations.holder(group.group_id)
        if holder is not None:
            what = _OPERATIONS.get(holder.kind, holder.kind)
            raise Conflict(f"group {name} cannot be deleted while a {what} runs at "
                           f"{self.config.name} (operation {holder.operation_id}): end it first")
        kept: dict[str, str] = {}
        checkpoint = None
        markers: dict[str, int] = {}
        if keep_replicas and is_spanning(group.volumes):
            # One group checkpoint for every member's kept replicas: the newest one.
            newest = self.groups.spanning.checkpoints(group.volumes)[-1:]
            if not newest:
                raise Conflict(f"group {name} has no checkpoint yet: its replicas hold no "
                               "image of one to keep; delete it without --keep-replicas")
            checkpoint, markers = newest[0]["id"], newest[0]["members"]
        live = {m.group_id for m in members_of(group.volumes)}
        for agent, stream in self.groups.streams(group):
            keep = keep_replicas and (not is_spanning(group.volumes) or stream in live)
            removed = AgentApi(agent).remove_recovery(stream, keep, markers.get(stream))
            kept.update(removed.kept)
            if not is_spanning(group.volumes):
                checkpoint = removed.checkpoint
        self._forget(group.group_id)
        return {"kept": kept, "checkpoint": checkpoint}

    def _forget(self, group_id: str) -> None:
        with self.groups.sessions.begin() as session:
            row = session.get(Group, group_id)
            if row is not None:
                session.delete(row)

    # --- whose group ---------------------------------------------------------------------

    def protected_here(self, name: str, doing: str) -> tuple[Group, Peer]:
        group, peer = self.groups.get(name)
        if group.role != "protected":
            where = (f"at its protected site ({peer.name}), which tells this one"
                     if group.role == "recovery" else "once it is protected again")
            raise Conflict(f"group {name} is {group.role} at this site: {doing} {where}")
        return group, peer

    def _recovered_for(self, name: str, source_site_id: str) -> Group:
        group, _ = self.groups.get(name)
        if group.role != "recovery" or group.peer_site_id != source_site_id:
            raise NotFound(f"no group named {name!r} recovered here from the requesting site")
        return group
