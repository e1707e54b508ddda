"""Groups spanning agents: their members and the group's checkpoints (pure, no I/O).

A group whose volumes all live on the site's own agent is one stream, as always: its
stored volumes carry no member keys. A group with volumes on other agents has one
*member* per agent holding some of its volumes; each member protects its volumes as a
stream of its own (id ``<group id>.<n>``), journaled apart at the recovery site, and the
members take checkpoints together (``seawall.agent.protect.coordination``).

Rules:
- Member 0 is the lead (it takes the checkpoints): the site's own agent when it holds a
  volume of the group, else the agent of the group's first volume. Members are numbered
  in the order of the group's volumes, and so are the volumes inside a member's stream.
- A stored volume of a spanning group says where it lives: ``agent``, ``member`` (its
  member's stream id) and ``member_index`` (its index in that stream).
- A checkpoint of the group is offered only when every member has a consistent marker
  sealed as it (``wire.records`` SEAL); its id is the lead's marker seq, its time and name
  the lead's. A member agent added later (``joined_after`` on its volumes) is needed only
  by the group checkpoints after the lead seq it joined at; one whose last volume left
  (``ended_after``) only by those up to the lead seq it left at. Its volumes stay in the
  stored list, marked so, for those checkpoints; ``current`` leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seawall.errors import CorruptData


@dataclass
class Member:
    agent: str
    group_id: str
    """Its stream's id: the protected group at its agent, the journal at the recovery site."""
    volumes: list[dict[str, Any]] = field(default_factory=list)
    """As in its stream: index (in the stream), name, size_bytes."""
    joined_after: int | None = None
    """A member agent added after the group was made: the group checkpoints up to this id
    (the lead's seq) were taken without it, and do not need its marker."""
    ended_after: int | None = None
    """A member agent whose last volume left the group: only the group checkpoints up to
    this id need its marker (its journal stays at the recovery site for them)."""


def is_spanning(volumes: list[dict[str, Any]]) -> bool:
    return any(volume.get("member") for volume in volumes)


def plan(group_id: str, located: list[tuple[str, dict[str, Any]]],
         own_agent: str) -> tuple[list[dict[str, Any]], list[Member]]:
    """The group's volumes as stored and its members (lead first), from each volume's
    (agent, volume as the agent lists it: name, size) in the group's order.

    Members are made only when some volume lives on another agent than ``own_agent``."""
    agents = [agent for agent, _ in located]
    if all(agent == own_agent for agent in agents):
        return [{"index": index, "name": volume["name"], "size_bytes": volume["size"]}
                for index, (_, volume) in enumerate(located)], []
    order = list(dict.fromkeys(agents))
    if own_agent in order:
        order.remove(own_agent)
        order.insert(0, own_agent)
    members = {agent: Member(agent, f"{group_id}.{n}") for n, agent in enumerate(order)}
    stored = []
    for index, (agent, volume) in enumerate(located):
        member = members[agent]
        member_index = len(member.volumes)
        member.volumes.append({"index": member_index, "name": volume["name"],
                               "size_bytes": volume["size"]})
        stored.append({"index": index, "name": volume["name"], "size_bytes": volume["size"],
                       "agent": agent, "member": member.group_id,
                       "member_index": member_index})
    return stored, list(members.values())


def members_of(volumes: list[dict[str, Any]], ended: bool = False) -> list[Member]:
    """The members of a spanning group from its stored volumes, lead first ([] if none);
    those that ended too with ``ended`` (the group's checkpoints and journals need them,
    its protection does not)."""
    members: dict[str, Member] = {}
    for volume in volumes:
        if not volume.get("member") or (volume.get("ended_after") is not None and not ended):
            continue
        member = members.setdefault(volume["member"], Member(
            volume["agent"], volume["member"], joined_after=volume.get("joined_after"),
            ended_after=volume.get("ended_after")))
        member.volumes.append({"index": volume["member_index"], "name": volume["name"],
                               "size_bytes": volume["size_bytes"]})
    return sorted(members.values(), key=lambda m: int(m.group_id.rpartition(".")[2]))


def current(volumes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The group's volumes now: without those of a member agent that ended."""
    return [v for v in volumes if v.get("ended_after") is None]


def ended(volumes: list[dict[str, Any]], member: str,
          after: int | None) -> list[dict[str, Any]]:
    """Member ``member`` ended after group checkpoint ``after`` (None: it goes on again)."""
    changed = []
    for volume in volumes:
        if volume.get("member") == member:
            volume = {k: v for k, v in volume.items() if k != "ended_after"}
            if after is not None:
                volume["ended_after"] = after
        changed.append(volume)
    return changed


def stored_after(stored: list[dict[str, Any]], member: str | None, agent: str,
                 volumes: list[dict[str, Any]],
                 joined_after: int | None = None) -> list[dict[str, Any]]:
    """A group's stored volumes once one stream's members became ``volumes`` (index, name,
    size_bytes, as in that stream): the whole list for a one-stream group (``member``
    None); else that member's entries kept in place or dropped, new ones appended with the
    next group index. Both sites compute the same list from the same one."""
    if member is None:
        return [{"index": v["index"], "name": v["name"], "size_bytes": v["size_bytes"]}
                for v in volumes]
    in_stream = {v["name"]: v for v in volumes}
    result = [v for v in stored if v.get("member") != member or v["name"] in in_stream]
    known = {v["name"] for v in result if v.get("member") == member}
    next_index = max([v["index"] for v in stored] + [-1]) + 1
    joined = next((v["joined_after"] for v in stored if v.get("member") == member
                   and v.get("joined_after") is not None), joined_after)
    for volume in volumes:
        if volume["name"] not in known:
            entry = {"index": next_index, "name": volume["name"],
                     "size_bytes": volume["size_bytes"], "agent": agent,
                     "member": member, "member_index": volume["index"]}
            result.append(entry if joined is None else {**entry, "joined_after": joined})
            next_index += 1
    return result


def member_of_volume(volumes: list[dict[str, Any]], name: str) -> str | None:
    """The member stream holding volume ``name`` (None: not a spanning group's volume); a
    volume of the group now before one of a member that ended (a name may come back)."""
    for volume in [*current(volumes), *volumes]:
        if volume["name"] == name:
            member: str | None = volume.get("member")
            return member
    return None


def join_checkpoints(members: list[Member],
                     lists: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The group's checkpoints from each member's list (as its recovery agent gives them):
    one per checkpoint every member has consistent and sealed, oldest first.

    Each carries ``members``: member stream id -> that member's marker seq."""
    lead = members[0].group_id
    sealed: dict[str, dict[int, dict[str, Any]]] = {}
    for member in members:
        by_group: dict[int, dict[str, Any]] = {}
        for entry in lists[member.group_id]:
            group_checkpoint = entry.get("sealed_as")
            if group_checkpoint is not None and entry.get("consistent", True):
                by_group[int(group_checkpoint)] = entry
        sealed[member.group_id] = by_group
    joined = []
    for group_checkpoint, lead_entry in sorted(sealed[lead].items()):
        if lead_entry["id"] != group_checkpoint:
            raise CorruptData(f"the lead's marker {lead_entry['id']} is sealed as checkpoint "
                              f"{group_checkpoint}: its journal is not the lead's")
        markers = {m.group_id: sealed[m.group_id].get(group_checkpoint) for m in members
                   if (m.joined_after is None or group_checkpoint > m.joined_after)
                   and (m.ended_after is None or group_checkpoint <= m.ended_after)}
        if any(entry is None for entry in markers.values()):
            continue
        joined.append({
            "id": group_checkpoint, "time_ns": lead_entry["time_ns"], "name": lead_entry["name"],
            "replicated": True, "consistent": True,
            "consistency": ("application" if all(e.get("consistency") == "application"
                                                 for e in markers.values() if e)
                            else "crash"),
            "members": {gid: entry["id"] for gid, entry in markers.items() if entry},
        })
    return joined


_SUMMED = ("written_bytes", "write_count", "buffered_bytes", "buffer_limit_bytes",
           "buffered_records", "dirty_bytes", "dirty_map_bytes", "overflows",
           "received_bytes", "journal_bytes", "journal_segments", "applied_bytes")
_ALL_TRUE = ("link_up", "connected")
_ANY_TRUE = ("journal_warning", "journal_full", "history_short")
_STATE_RANK = ("error", "paused", "failed-over", "initial-sync", "delta-sync", "bitmap-sync",
               "full-sync")
"""The state a spanning group shows: the first of these any member is in, else the lead's."""


def merge_status(statuses: list[tuple[Member, dict[str, Any]]],
                 newest_checkpoint_ns: int | None, now_ns: int) -> dict[str, Any]:
    """One status of a spanning group from its members' (as their agents give them),
    shaped like a one-agent group's, with ``members`` added.

    ``newest_checkpoint_ns``: the newest checkpoint of the whole group (the recovery site
    knows it from the joined list; the protected site passes the oldest of its members'
    newest replicated ones): the group's RPO is computed from it."""
    merged: dict[str, Any] = dict(statuses[0][1])
    merged["group_id"] = statuses[0][0].group_id.rpartition(".")[0]  # the group's, not a stream's
    for key in _SUMMED:
        if key in merged:
            merged[key] = sum(int(s.get(key) or 0) for _, s in statuses)
    for key in _ALL_TRUE:
        if key in merged:
            merged[key] = all(bool(s.get(key)) for _, s in statuses)
    for key in _ANY_TRUE:
        if key in merged:
            merged[key] = any(bool(s.get(key)) for _, s in statuses)
    covered = [s["history_covered_s"] for _, s in statuses if s.get("history_covered_s")
               is not None]
    if "history_covered_s" in merged:
        merged["history_covered_s"] = min(covered) if len(covered) == len(statuses) else None
    states = {s.get("state") for _, s in statuses}
    state = next((state for state in _STATE_RANK if state in states), merged.get("state"))
    if state is not None:  # a recovery journal's status has none
        merged["state"] = state
    odd = next((s for _, s in statuses if s.get("state") == state), merged)
    for key in ("phase", "refusal", "last_error", "sync"):
        if key in odd:
            merged[key] = odd[key]
    newest_key = ("newest_replicated_checkpoint_ns" if "newest_replicated_checkpoint_ns"
                  in merged else "newest_checkpoint_ns")
    merged[newest_key] = newest_checkpoint_ns
    merged["rpo_s"] = (now_ns - newest_checkpoint_ns) / 1e9 if newest_checkpoint_ns else None
    for key in ("mirrors", "mirror_refusals"):  # VM disks' mirrors, on their agents
        if key in merged:
            merged[key] = {k: v for _, s in statuses for k, v in (s.get(key) or {}).items()}
    if "vm_alerts" in merged:
        merged["vm_alerts"] = [alert for _, s in statuses for alert in s.get("vm_alerts") or []]
    wan = [s.get("wan") or {} for _, s in statuses]
    if "wan" in merged:
        merged["wan"] = {**wan[0], "sent_bytes": sum(int(w.get("sent_bytes") or 0)
                                                      for w in wan)}
    merged["members"] = [{"agent": member.agent, "group_id": member.group_id,
                          "volumes": [v["name"] for v in member.volumes],
                          "state": status.get("state") or _receiving(status),
                          "coordination": status.get("coordination")}
                         for member, status in statuses]
    return merged


def _receiving(status: dict[str, Any]) -> str:
    """A member journal's state at the recovery site, in the status document's words."""
    if status.get("journal_full"):
        return "paused"
    return "receiving" if status.get("connected") else "disconnected"
