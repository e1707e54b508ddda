"""A change of a group's members, planned (pure: no I/O; ``groups.membership`` runs it).

Rules:
- ``plan_change``: the checks that need no agent: something to change, no name twice, a
  volume added is not a member yet, one removed is one, and some volume is left (else the
  group is to be deleted).
- ``stream_changes``: which streams change and how, each volume indexed as in its stream.
  A one-agent group is one stream and takes volumes of its agent only. In a group spanning
  agents, a volume joins its agent's member stream; a volume on an agent that is not a
  member makes it one (a new stream, numbered after every one the group ever had, so a
  number is never reused); removing a member agent's last volumes ends that member (never
  the lead's: it takes the group's checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seawall.contract.agent import GroupVolume, NewVolume, RecoveryMembers
from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.manager.groups.members import is_spanning, members_of
from seawall.manager.models import Group


def plan_change(members: list[dict[str, Any]], add: list[str], remove: list[str],
                group_name: str) -> list[dict[str, Any]]:
    """The members kept, in order, after removing ``remove`` and before adding ``add``
    (pure: the checks of a change that need no agent)."""
    names = [v["name"] for v in members]
    if not add and not remove:
        raise InvalidInput("nothing to change: give --add-volume or --remove-volume")
    for what, given in (("--add-volume", add), ("--remove-volume", remove)):
        if len(set(given)) != len(given):
            raise InvalidInput(f"a volume is given twice to {what}")
    both = sorted(set(add) & set(remove))
    if both:
        raise InvalidInput(f"{', '.join(both)}: both added and removed")
    already = [name for name in add if name in names]
    if already:
        raise Conflict(f"volume {already[0]!r} is already in group {group_name}")
    unknown = [name for name in remove if name not in names]
    if unknown:
        raise NotFound(f"group {group_name} has no volume {unknown[0]!r} (its volumes: "
                       f"{', '.join(names)})")
    kept = [v for v in members if v["name"] not in remove]
    if not kept and not add:
        raise InvalidInput(f"removing {', '.join(remove)} would leave group {group_name} "
                           f"with no volume: delete the group instead (`seawall group "
                           f"delete {group_name}`)")
    return kept


@dataclass
class StreamChange:
    """One stream's change of members: the group's only one, or a member's."""

    stream: str
    member: str | None
    """The member stream's id in a group spanning agents; None: the group is one stream."""
    agent: str
    old: list[GroupVolume]
    kept: list[GroupVolume]
    added: list[NewVolume]
    new_member: bool = False
    """A member agent that joins the group with these volumes: a new stream."""
    ending: bool = False
    """A member agent whose last volumes leave: its stream ends (its journal stays)."""
    volumes: list[GroupVolume] = field(default_factory=list)
    """The stream's members once the recovery site gave the new ones their indexes."""
    joined_after: int | None = None
    """A new member's: the group checkpoints up to this id do not need it."""

    def request(self) -> RecoveryMembers:
        return RecoveryMembers(volumes=self.kept, added=self.added)


def stream_changes(group: Group, kept: set[str], new: list[tuple[str, NewVolume]],
                   own_agent: str) -> list[StreamChange]:
    """The streams whose members change (pure): volumes are indexed as in their stream.

    A volume to add must be on the group's agent; in a group spanning agents, a volume on
    an agent that is not a member makes it one (a new member stream, numbered after every
    one the group had), and removing a member agent's last volumes ends that member (not
    the lead's: it takes the group's checkpoints)."""
    if not is_spanning(group.volumes):
        for agent, volume in new:
            if agent != own_agent:
                raise Conflict(f"volume {volume.name!r} is on agent {agent}, group "
                               f"{group.name}'s volumes on {own_agent}: a group made on one "
                               "agent cannot take another agent's volume yet")
        old = [GroupVolume.model_validate(v) for v in group.volumes]
        return [StreamChange(group.group_id, None, own_agent, old,
                             [v for v in old if v.name in kept], [v for _, v in new])]
    members = members_of(group.volumes)
    changes = []
    for member in members:
        old = [GroupVolume.model_validate(v) for v in member.volumes]
        stays = [v for v in old if v.name in kept]
        added = [v for agent, v in new if agent == member.agent]
        if len(stays) == len(old) and not added:
            continue
        if not stays and not added and member is members[0]:
            raise Conflict(f"removing {', '.join(v.name for v in old)} would leave the lead "
                           f"agent {member.agent} of group {group.name} with no volume: the "
                           "lead takes the group's checkpoints; keep a volume on it, or "
                           "delete the group")
        changes.append(StreamChange(member.group_id, member.group_id, member.agent, old,
                                    stays, added, ending=not stays and not added))
    agents = [m.agent for m in members]
    number = max(int(m.group_id.rpartition(".")[2])
                 for m in members_of(group.volumes, ended=True)) + 1  # never reused
    for agent in dict.fromkeys(agent for agent, _ in new if agent not in agents):
        stream = f"{group.group_id}.{number}"
        number += 1
        changes.append(StreamChange(stream, stream, agent, [], [],
                                    [v for a, v in new if a == agent], new_member=True))
    return changes
