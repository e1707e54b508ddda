"""A recovered group's members over time: who is in, who left, which checkpoints hold whom.

Pure: no I/O. ``change`` takes the group's spec and a ``RecoveryMembers`` request and
returns the spec to be (the caller reopens the journal when ``reopen``).

Rules and invariants:
- An index names one volume for the group's whole life: a new member gets one above every
  index the group ever had (members and retired), and a kept member keeps its name and
  size (a request that changes them is refused).
- A member left out of the request is *retired*: its replica and journal entries stay, and
  it reads back at the checkpoints that include it until they age out.
- Which checkpoints include a volume: those after ``added_after_seq`` (members added after
  the group was made) and up to ``removed_after_seq`` (retired ones). At the change the
  protected site's seq is not known yet: an addition is bounded below by the journal's
  written seq (no record of the volume can be in it yet) and a removal is open (every
  checkpoint includes it); both are *unsettled* until a request brings
  ``changed_after_seq``, the protected site's last seq at the change.
- ``forget`` drops a member with its replica (an addition taken back: it never had a
  record); a volume the protected site never wrote is all it can name.
"""

from __future__ import annotations

from dataclasses import dataclass

from seawall.contract.agent import GroupVolume, RecoveryMembers, RecoverySpec, RetiredVolume
from seawall.errors import Conflict, InvalidInput, NotFound


@dataclass(frozen=True)
class Changed:
    spec: RecoverySpec
    reopen: bool
    """The journal's volumes changed (one added or forgotten): open it again."""
    forgotten: list[GroupVolume]
    """Volumes whose replica goes."""


def includes(spec: RecoverySpec, volume: GroupVolume, checkpoint_seq: int) -> bool:
    """Whether checkpoint ``checkpoint_seq`` includes ``volume`` (a member or retired)."""
    added = (volume.added_after_seq if isinstance(volume, RetiredVolume)
             else spec.added_after_seq.get(volume.index))
    if added is not None and checkpoint_seq <= added:
        return False
    if isinstance(volume, RetiredVolume):
        return volume.removed_after_seq is None or checkpoint_seq <= volume.removed_after_seq
    return True


def change(spec: RecoverySpec, request: RecoveryMembers, written_seq: int) -> Changed:
    members = {v.index: v for v in spec.volumes}
    retired = {v.index: v for v in spec.retired}
    added_after = dict(spec.added_after_seq)
    unsettled = set(spec.unsettled)
    forget = set(request.forget)
    forgotten = [v for v in spec.volumes if v.name in forget]
    if len(forgotten) != len(forget):
        raise NotFound(f"cannot forget {sorted(forget - {v.name for v in forgotten})}: not "
                       f"members of group {spec.name}")
    kept: list[GroupVolume] = []
    for volume in request.volumes:
        was = members.get(volume.index) or retired.get(volume.index)
        if was is None or (was.name, was.size_bytes) != (volume.name, volume.size_bytes):
            raise Conflict(f"volume {volume.name!r} (index {volume.index}) is not one of "
                           f"group {spec.name}'s: a new member goes in ``added``")
        if volume.name in forget:
            raise InvalidInput(f"volume {volume.name!r} is both kept and forgotten")
        if volume.index in retired:  # a removal taken back
            back = retired.pop(volume.index)
            unsettled.discard(volume.index)
            if back.added_after_seq is not None:
                added_after[volume.index] = back.added_after_seq
        kept.append(GroupVolume(index=volume.index, name=volume.name,
                                size_bytes=volume.size_bytes))
    names = [v.name for v in kept] + [v.name for v in request.added]
    if len(set(names)) != len(names):
        raise InvalidInput("a volume is named twice")
    if not names:
        raise InvalidInput(f"group {spec.name} needs at least one volume")
    next_index = max([*members, *retired, -1]) + 1
    for new in request.added:
        kept.append(GroupVolume(index=next_index, name=new.name, size_bytes=new.size_bytes))
        added_after[next_index] = written_seq
        unsettled.add(next_index)
        next_index += 1
    staying = {v.index for v in kept}
    for volume in spec.volumes:
        if volume.index not in staying and volume.name not in forget:
            retired[volume.index] = RetiredVolume(
                index=volume.index, name=volume.name, size_bytes=volume.size_bytes,
                added_after_seq=added_after.get(volume.index))
            unsettled.add(volume.index)
    for volume in forgotten:
        added_after.pop(volume.index, None)
        unsettled.discard(volume.index)
    added_after = {index: seq for index, seq in added_after.items() if index in staying}
    if request.changed_after_seq is not None:
        for index in unsettled:
            if index in retired:
                retired[index] = retired[index].model_copy(
                    update={"removed_after_seq": request.changed_after_seq})
            elif index in added_after:
                added_after[index] = request.changed_after_seq
        unsettled = set()
    held_before = set(members) | {v.index for v in spec.retired}
    held_after = staying | set(retired)
    return Changed(
        spec=spec.model_copy(update={
            "volumes": kept, "retired": sorted(retired.values(), key=lambda v: v.index),
            "added_after_seq": added_after, "unsettled": sorted(unsettled)}),
        reopen=held_after != held_before,
        forgotten=forgotten)

