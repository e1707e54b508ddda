"""The mirrors of a protected group's capture sinks: which run, which are due, which ended.

A capture sink (a VM disk's mirror target, ``SinkVolume``) keeps no copy: its writes reach
the group only while QEMU mirrors the disk to it. ``ProtectedGroup`` owns one ``SinkMirrors``
(``group.mirrors``); the ``Splitter`` attaches the mirrors and reports on them here.

Rules and invariants:
- A sink whose mirror runs since this agent attached it (``running``) keeps it across
  windows: its part of the plan is read through QEMU (``open_reader``, the ``Splitter``'s)
  like a file's. A sink without one gets a mirror in the window (``on_copy_needed``): a full
  copy when its plan ships it whole or the recovery site holds nothing of the group yet (a
  first sync, durable seq 0 and not pre-seeded; or its full copy did not finish), else a
  mirror of new writes only and a comparison of the whole disk (its writes since the last
  mirror were captured nowhere; on libvirt that mirror is a full copy the sink discards:
  ``seawall.agent.protect.splitter``). Without an adapter that reads disks (``readable``
  False) every window copies every sink whole.
- A sink whose VM is shut off (``offline``, the ``Splitter`` says when) gets no mirror:
  nothing writes its disk, so its part of the plan is read from the disk file
  (``seawall.agent.protect.file_reader``): whole if a full copy is due (as above), else
  compared whole (the VM may have written after its mirror ended, or while the agent was
  down). It is not ``lost``: once synced, the group is protecting and its checkpoints are
  exact. When the VM starts it leaves ``offline`` and gets a mirror as any sink.
- The window closes (SYNC_END) when the syncer is done and every new mirror is ready
  (``sink_ready``; ``wait_settled``). A sink whose mirror ended (``sink_lost``) makes the
  group ``sync-required``: no checkpoint until a new window attached it again
  (``ProtectedGroup.copy_sinks``). The stream goes on meanwhile. A mirror that could not
  be attached keeps the error's code (``codes``): the manager, waiting for the mirrors of
  a VM it adds (``attaching`` until then), undoes the change and names it.
- Everything here is by place in the group's ``volumes``; ``follow`` moves it when the
  members change (a removed sink's entries go with it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from seawall.agent.protect.sink import ProtectedVolume, SinkVolume
from seawall.agent.protect.syncer import OpenReader
from seawall.sync.plan import SyncPlan


class SinkMirrors:
    def __init__(self, volumes: list[ProtectedVolume], on_lost: Callable[[str], None]) -> None:
        self._volumes = volumes
        self._on_lost = on_lost  # the group's: records why (last_error) and logs it
        self.sinks = [i for i, volume in enumerate(volumes) if isinstance(volume, SinkVolume)]
        self.pending = set(self.sinks)  # sinks whose full copy is still due
        self.lost: dict[int, str] = {}  # sinks with no mirror running: why
        self.codes: dict[int, str] = {}  # sinks whose mirror could not be attached: the code
        self.running: set[int] = set()  # attached by this agent and not ended
        self._full_copy_due: set[int] = set()  # sinks whose full copy has not finished
        self.offline: set[int] = set()  # sinks whose VM is shut off: read from their files
        self._settled = asyncio.Event()
        # the Splitter's: attach mirrors (sink -> with a full copy), read disks through QEMU
        self.on_copy_needed: Callable[[dict[int, bool]], None] | None = None
        self.open_reader: OpenReader | None = None
        self.readable = False

    def to_attach(self, sinks: list[int], plan: SyncPlan, first_sync: bool) -> dict[int, bool]:
        """Which of ``sinks`` get a new mirror in this window, each with a full copy or
        not; their parts of the plan set to match (see the module rules). ``first_sync``:
        the recovery site holds nothing of the group yet (and it is not pre-seeded)."""
        for index in self.offline.intersection(sinks):
            self._read_files(index, plan, first_sync)
        sinks = [index for index in sinks if index not in self.offline]
        if not self.readable:
            for index in self.sinks:
                if index not in self.offline:
                    plan.forget(index)  # the mirrors' full copies cover them
            return dict.fromkeys(sinks, True)
        attach: dict[int, bool] = {}
        for index in sinks:
            if index in self.running:
                continue  # it captured every write: its plan part is read through QEMU
            # Nothing to compare with while the recovery site holds nothing of the group,
            # or not all of this disk (a full copy that did not finish).
            attach[index] = plan.is_whole(index) or index in self._full_copy_due or first_sync
            if attach[index]:
                plan.forget(index)  # the mirror's full copy covers it
                self._full_copy_due.add(index)
            else:
                plan.compare_volume(index)
        return attach

    def _read_files(self, index: int, plan: SyncPlan, first_sync: bool) -> None:
        """Sink ``index``'s VM is shut off: its plan part is read from the disk file."""
        self.lost.pop(index, None)
        if first_sync or index in self._full_copy_due or plan.is_whole(index):
            plan.forget(index)
            plan.mark(index, 0, self._volumes[index].size_bytes)
            self._full_copy_due.discard(index)  # if cut short, the rest is compared
        else:
            plan.compare_volume(index)

    def sink_shut_off(self, index: int) -> None:
        """Sink ``index``'s VM is shut off: no mirror, its disk is read from the file."""
        self.pending.discard(index)
        self.running.discard(index)
        self.lost.pop(index, None)
        self.offline.add(index)
        self._settled.set()

    def sink_started(self, index: int) -> None:
        """Sink ``index``'s VM runs again: it needs a mirror (``copy``) from now on."""
        self.offline.discard(index)

    def copy(self, sinks: dict[int, bool]) -> None:
        """Attach these sinks' mirrors (sink -> with a full copy) through the Splitter."""
        for index in sinks:
            self.lost.pop(index, None)
            self.codes.pop(index, None)
            self.running.discard(index)
            self.pending.add(index)
        if not sinks:
            return
        if self.on_copy_needed is None:
            for index in sinks:
                self.sink_lost(index, "no hypervisor adapter to attach its mirror (the agent "
                                      "runs with --hypervisor none)")
        else:
            self.on_copy_needed(dict(sorted(sinks.items())))

    async def wait_settled(self) -> None:
        """Until no full copy is pending: each mirror is ready or ended."""
        while self.pending:
            self._settled.clear()
            await self._settled.wait()

    def sink_attached(self, index: int) -> None:
        """The mirror of sink ``index`` exists: every write from now on reaches the sink."""
        self.running.add(index)

    def sink_ready(self, index: int) -> None:
        """The mirror of sink ``index`` is ready (a full copy done): it sees every write."""
        self.pending.discard(index)
        self._full_copy_due.discard(index)
        self._settled.set()

    def sink_lost(self, index: int, reason: str, code: str | None = None) -> None:
        """The mirror of sink ``index`` is gone (or could not start: ``code``, the error's):
        its disk's writes are no longer captured, so no checkpoint is taken until it is
        copied again."""
        self.pending.discard(index)
        self.running.discard(index)
        self.lost[index] = reason
        if code is not None:
            self.codes[index] = code
        self._on_lost(f"mirror of {self._volumes[index].name} ended: {reason}")
        self._settled.set()

    def follow(self, volumes: list[ProtectedVolume], sources: list[int | None]) -> None:
        """The bookkeeping, by place, after the members changed to ``volumes``
        (``sources``: the old place of each new member, None for a new one)."""
        moved = {old: new for new, old in enumerate(sources) if old is not None}
        self._volumes = volumes
        self.sinks = [i for i, volume in enumerate(volumes) if isinstance(volume, SinkVolume)]
        self.pending = {moved[i] for i in self.pending if i in moved}
        self.lost = {moved[i]: why for i, why in self.lost.items() if i in moved}
        self.codes = {moved[i]: code for i, code in self.codes.items() if i in moved}
        self.running = {moved[i] for i in self.running if i in moved}
        self._full_copy_due = {moved[i] for i in self._full_copy_due if i in moved}
        self.offline = {moved[i] for i in self.offline if i in moved}
        self._settled.set()

    def describe(self, syncing: bool, plan: SyncPlan) -> dict[str, str]:
        """Each sink's mirror by volume name, for the group's status."""
        return {self._volumes[i].name: self._state(i, syncing, plan) for i in self.sinks}

    def refusals(self) -> dict[str, str]:
        """The error code of each sink whose mirror could not be attached, by volume name."""
        return {self._volumes[i].name: code for i, code in self.codes.items()}

    def _state(self, index: int, syncing: bool, plan: SyncPlan) -> str:
        if index in self.lost:
            return f"ended: {self.lost[index]}"
        if index in self.offline:
            reading = syncing and (plan.maps[index] or plan.compare_from[index] is not None)
            return "shut off: reading its file" if reading else "shut off: read from its file"
        if index not in self.running:
            return "attaching"  # no mirror yet: its first window has not attached it
        if syncing and (plan.maps[index] or plan.compare_from[index] is not None):
            return "comparing"  # its disk is read through QEMU
        return "copying" if index in self.pending else "mirroring"
