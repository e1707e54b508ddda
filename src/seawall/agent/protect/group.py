"""A protection group on its protected side: capture, syncs, checkpoints, status.

Capture has two modes. *Streaming*: every write is appended to the group's stream (and
shipped from there) before it is acknowledged. *Tracking*: the stream is dropped and only
the ranges written are marked in the group's ``SyncPlan`` (bounded memory); a bitmap or
delta sync ships them later (``Syncer``). The hooks: ``seawall.agent.protect.capture``.

Rules and invariants:
- Coverage (the plan's rule): every write not durable at the recovery site is in the
  positioned stream or in the plan. So a sync after tracking ships exactly what is missing.
- Buffer: while the link is down the group keeps buffering — a short outage loses no
  checkpoint — until the unacknowledged records reach ``OVERFLOW_RATIO`` of the group's
  share of the agent's buffer; then it turns them into plan marks and tracks (the records'
  checkpoints become lost: they never reached the recovery site). Memory is then the
  plan's bound, whatever the length of the outage.
- Each session starts with ``on_connected(D)``, D the recovery site's durable seq. The
  stream resumes if it still holds everything after D. Otherwise a sync starts: from the
  plan if it is valid for D (``plan.base_seq <= D <= issued``), else a delta sync of
  everything (agent crash: no plan survives one), or a full sync for a new group whose
  replica is empty (D = 0 and not pre-seeded). The stream is repositioned at D and opens
  with SYNC_BEGIN; numbering goes on above every checkpoint id ever issued.
- A sync is bracketed by SYNC_BEGIN/SYNC_END; checkpoints are created only while
  protecting (no sync running, not tracking), so every checkpoint is crash-consistent.
- A clean stop saves the plan (stream records turned into marks) so that the next start
  runs a bitmap sync; the file is deleted as soon as it is read (see ``SyncPlan``).
- Settings change in place (``reconfigure``): a new checkpoint interval restarts the timer
  at once; the stream, the plan and the link are untouched, so no sync follows.
- Members change in place too (``change_volumes``), in one step of the event loop (no write
  is taken meanwhile): a new volume is shipped whole inside a sync window, while the other
  members keep streaming; a removed one is captured no more. Records name a volume by its
  index in the group (``GroupVolume.index``, never reused), not by its place in ``volumes``.
- Capture sinks (a VM disk's mirror target) keep no copy: their mirrors are followed by
  ``SinkMirrors`` (``self.mirrors``, see its rules); a sink whose mirror ended makes the
  group ``sync-required`` (no checkpoint) until a new window attached it again.
- VM configurations: ``GroupVmConfigs`` (``self.vm_configs``, see its rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from seawall.agent.protect.capture import WriteCounter, stream_hook, tracking_hook
from seawall.agent.protect.checkpoints import CheckpointLog, LoggedCheckpoint
from seawall.agent.protect.sink import ProtectedVolume
from seawall.agent.protect.sink_mirrors import SinkMirrors
from seawall.agent.protect.stream import GroupStream
from seawall.agent.protect.syncer import RemoteDigests, Syncer, SyncProgress
from seawall.agent.protect.vm_configs import GroupVmConfigs
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.errors import InvalidInput, NotReady
from seawall.sync.dirtymap import DEFAULT_BOUND_BYTES
from seawall.sync.plan import SyncPlan
from seawall.wire.records import CONSISTENCY, RecordKind, VmConfig

log = logging.getLogger(__name__)

SYNC_BUFFER_LIMIT_BYTES = 64 << 20
"""A sync pauses while this much (or half the group's buffer) awaits its ACK."""
OVERFLOW_RATIO = 0.9
MAX_CHECKPOINT_NAME_BYTES = 512
PLAN_FILE = "sync-plan.bin"
PAUSE_CODES = frozenset({"journal_full", "failed_over"})
"""Refusals that pause the group (it retries by itself); any other one is an error."""


class ProtectedGroup:
    def __init__(self, spec: ProtectionSpec, volumes: list[ProtectedVolume], state_dir: Path,
                 buffer_limit_bytes: int, bitmap_bytes: int = DEFAULT_BOUND_BYTES) -> None:
        self.spec = spec
        self.volumes = volumes
        self.buffer_limit_bytes = buffer_limit_bytes
        self.stream = GroupStream()
        self.checkpoints = CheckpointLog(state_dir / "checkpoints.jsonl")
        self.link_up = False
        self.last_error = ""
        self.refusal: tuple[str, str] | None = None  # (code, message) from the recovery site
        self.vms_stopping = False  # a fence shuts its VMs down (``SourceFailover``)
        self.overflows = 0
        self.writes = [WriteCounter() for _ in volumes]  # by place in ``volumes``
        self.wire_index = [volume.index for volume in spec.volumes]
        self.link_reset = asyncio.Event()
        self.stream_changed = asyncio.Event()
        self.acked = asyncio.Event()
        self._remote: RemoteDigests | None = None
        self._remote_ready = asyncio.Event()
        self._state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        sizes = [volume.size_bytes for volume in volumes]
        plan_path = state_dir / PLAN_FILE
        loaded = SyncPlan.load(plan_path, sizes, bitmap_bytes)
        SyncPlan.discard(plan_path)  # before any write: a crash from now on leaves no plan
        self._initial = loaded is None and not self.checkpoints.entries
        if loaded is not None:
            self.plan, self._issued_seq = loaded
            self._plan_valid = True
        else:
            self.plan = SyncPlan(sizes, bitmap_bytes)
            self.plan.compare_all()
            self._issued_seq = 0
            self._plan_valid = False  # until we hear where the recovery site stands
        self.tracking = True
        self.syncing = False
        self.sync = SyncProgress()
        self._sync_task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self.mirrors = SinkMirrors(volumes, self._mirror_ended)
        self.vm_configs = GroupVmConfigs(self.stream)
        self._set_capture(tracking=True)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._timer_task = asyncio.create_task(self._checkpoint_timer())

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until the recovery site has every record: a clean stop then loses
        no checkpoint. The front end takes no writes any more when this is called."""
        deadline_s = time.monotonic() + timeout_s
        while (not self.tracking and self.link_up and self.stream.record_count
               and time.monotonic() < deadline_s):
            self.acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acked.wait(), deadline_s - time.monotonic())

    async def stop(self) -> None:
        """Stop capturing and save the plan (the front end takes no more writes by now)."""
        for task in (self._sync_task, self._timer_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if not self.tracking:
            self._drop_stream()
        for volume in self.volumes:
            volume.capture = None
        if self._plan_valid:
            self.plan.save(self._state_dir / PLAN_FILE, self._issued_seq)

    # --- the link ----------------------------------------------------------------------

    def on_connected(self, durable_seq: int, remote: RemoteDigests) -> None:
        """A session started; the recovery site is durable up to ``durable_seq``."""
        self.link_up = True
        if self.refusal is not None and self.refusal[0] not in PAUSE_CODES:
            self.refusal = None  # a pause ends with the first ACK: records land again
        self._remote = remote
        self._remote_ready.set()
        if not self.tracking and self.stream.can_resume_from(durable_seq):
            self.acknowledge(durable_seq)
            return
        if not self.tracking:  # the recovery site lost what it had acknowledged
            self._drop_stream()
            self._plan_valid = False
        if not (self._plan_valid and self.plan.base_seq <= durable_seq <= self._issued_seq):
            if durable_seq == 0 and not self.spec.preseeded:
                self.plan.mark_all()
            else:
                self.plan.compare_all()
        self._initial = durable_seq == 0  # the recovery site holds nothing of the group yet
        lost = self.checkpoints.mark_lost_after(durable_seq)
        issued = max(self._issued_seq, self.checkpoints.issued_seq)
        self.stream.position(durable_seq, first_seq=issued + 1)
        self._plan_valid = True
        self._start_sync(f"recovery site durable at {durable_seq}, {lost} checkpoints lost")

    def on_disconnected(self, reason: str) -> None:
        self.link_up = False
        self.last_error = reason
        self._remote = None
        self._remote_ready.clear()

    def on_refused(self, code: str, message: str) -> None:
        """The recovery site refused the session (journal full, unknown group, ...)."""
        self.refusal = (code, message)

    def acknowledge(self, durable_seq: int) -> None:
        self.stream.acknowledge(durable_seq)
        if self.refusal is not None and self.refusal[0] in PAUSE_CODES:
            self.refusal = None  # the recovery site takes records again
        self.acked.set()

    async def remote_digests(self) -> RemoteDigests:
        while self._remote is None:
            await self._remote_ready.wait()
        return self._remote

    # --- syncs -------------------------------------------------------------------------

    def resync(self) -> None:
        """Compare every volume with the recovery site now (``seawall group resync``)."""
        self.plan.compare_all()
        self._plan_valid = True  # a comparison of everything is right whatever D is
        if not self.tracking:
            self._start_sync("requested")

    def _start_sync(self, reason: str, sinks: list[int] | None = None) -> None:
        """Open a sync window; ``sinks``: the sinks to copy again (None: all of them)."""
        if self._sync_task is not None:
            self._sync_task.cancel()
        self.stream.append(RecordKind.SYNC_BEGIN, time.time_ns())
        window_seq = self.stream.last_seq
        self.vm_configs.append_all()
        self._set_capture(tracking=False)
        self.syncing = True
        first_sync = self._initial and not self.spec.preseeded
        self.mirrors.copy(self.mirrors.to_attach(self.mirrors.sinks if sinks is None else sinks,
                                                 self.plan, first_sync))
        log.info("group %s: %s from seq %d (%s): %d bytes to go", self.spec.name,
                 self.state, self.stream.last_seq, reason, self.plan.pending_bytes,
                 extra={"group": self.spec.name})
        syncer = Syncer(self.plan, self.volumes, self.stream,
                        stream_changed=self.stream_changed, acked=self.acked,
                        window_seq=window_seq,
                        remote=self.remote_digests,
                        pause_bytes=min(SYNC_BUFFER_LIMIT_BYTES, self.buffer_limit_bytes // 2),
                        wire_index=self.wire_index,
                        open_reader=self.mirrors.open_reader
                        if self.mirrors.readable or self.mirrors.offline else None)
        self.sync = syncer.progress
        self._sync_task = asyncio.create_task(self._run_sync(syncer))

    async def _run_sync(self, syncer: Syncer) -> None:
        try:
            await syncer.run()
            await self.mirrors.wait_settled()
        except Exception as exc:  # e.g. a volume read error: track, retry on a new session
            log.exception("group %s: sync failed", self.spec.name,
                          extra={"group": self.spec.name})
            self._sync_task = None  # this task: _drop_stream must not cancel it
            self._drop_stream()
            self.last_error = f"sync failed: {type(exc).__name__}: {exc}"
            self.link_reset.set()
            self.stream_changed.set()
            return
        self.stream.append(RecordKind.SYNC_END, time.time_ns())
        self.stream_changed.set()
        self.syncing = False
        self._initial = False
        log.info("group %s: sync complete (%d bytes shipped), protecting", self.spec.name,
                 syncer.progress.shipped_bytes, extra={"group": self.spec.name})

    # --- capture sinks (the Splitter reports on their mirrors) ---------------------------

    def _mirror_ended(self, message: str) -> None:
        self.last_error = message
        log.warning("group %s: %s; sync required", self.spec.name, self.last_error,
                    extra={"group": self.spec.name})

    def copy_sinks(self, sinks: list[int], reason: str = "mirror attached again") -> None:
        """Copy these sinks again (their mirror can be attached again, or their VM is shut
        off: read from its files): in a new window, or in the next one if the group is
        tracking (a session with a sync is coming)."""
        if self.tracking:
            return
        self._start_sync(reason, sinks)

    # --- VM configurations ---------------------------------------------------------------

    def set_vm_config(self, config: VmConfig) -> None:
        """A VM's definition as captured now: into the stream unless tracking (then the
        next sync window carries it)."""
        self.vm_configs.set(config, streaming=not self.tracking)
        if not self.tracking:
            self.stream_changed.set()

    # --- capture -----------------------------------------------------------------------

    def _set_capture(self, tracking: bool) -> None:
        self.tracking = tracking
        for index, volume in enumerate(self.volumes):
            counter = self.writes[index]
            volume.capture = (
                tracking_hook(self.plan, index, counter) if tracking else
                stream_hook(self.stream, self.wire_index[index], self.stream_changed,
                            int(self.buffer_limit_bytes * OVERFLOW_RATIO), counter,
                            self._overflow))

    def _drop_stream(self) -> None:
        """Turn the unacknowledged records into plan marks and start tracking."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            self._sync_task = None
        place = {index: n for n, index in enumerate(self.wire_index)}
        self.plan.mark_records(record._replace(volume=place[record.volume])
                               for record in self.stream.unacked()
                               if record.volume in place)  # a removed volume's: not ours now
        self.plan.base_seq = self.stream.acked_seq
        self._issued_seq = max(self._issued_seq, self.stream.last_seq)
        self.stream.reset()
        self._set_capture(tracking=True)

    def _overflow(self) -> None:
        self.overflows += 1
        log.warning("group %s: backlog reached %d%% of its %d-byte buffer: tracking dirty "
                    "ranges, a bitmap sync follows", self.spec.name, OVERFLOW_RATIO * 100,
                    self.buffer_limit_bytes, extra={"group": self.spec.name})
        self._drop_stream()
        self.last_error = "buffer full: tracking dirty ranges for a bitmap sync"
        self.link_reset.set()  # the new session finds the stream unpositioned: sync
        self.stream_changed.set()
        self.acked.set()

    # --- members -----------------------------------------------------------------------

    def change_volumes(self, volumes: list[GroupVolume], files: list[ProtectedVolume]) -> int:
        """Take ``volumes`` (their ``files``, in the same order) as the group's members, in
        place; the seq issued last, after which no record of a removed volume comes.

        A member kept keeps its plan marks, counters and capture; a new one is shipped whole
        in a sync window (no checkpoint until it ends; the recovery site made its replica
        empty before we were told); a removed one is no longer captured. The link is reset so
        that the next HELLO announces the new members (``seawall.wire.events.Hello``)."""
        places = {volume.index: n for n, volume in enumerate(self.spec.volumes)}
        sources = [places.get(volume.index) for volume in volumes]
        kept = {volume.index for volume in volumes}
        for volume, file in zip(self.spec.volumes, self.volumes, strict=True):
            if volume.index not in kept:
                file.capture = None
        self.plan.remap(sources, [file.size_bytes for file in files])
        self.writes = [WriteCounter() if source is None else self.writes[source]
                       for source in sources]
        self.volumes, self.spec.volumes = files, volumes
        self.wire_index = [volume.index for volume in volumes]
        self.mirrors.follow(files, sources)
        self._set_capture(tracking=self.tracking)
        last_seq = max(self._issued_seq, self.stream.last_seq)
        if not self.tracking and (self.syncing or None in sources):
            # A running sync works on the old places: it restarts on the new ones (what it
            # took from the plan is in the stream already, the rest still in the plan).
            # Sinks kept keep their running mirrors; a new one is copied whole.
            self._start_sync("volumes added" if None in sources else "volumes removed")
        if None in sources:
            self.link_reset.set()
        return last_seq

    # --- checkpoints -------------------------------------------------------------------

    @property
    def protecting(self) -> bool:
        return not self.tracking and not self.syncing and not self.mirrors.lost

    def tag_checkpoint(self, name: str, tagged: bool = True,
                       consistency: str = "crash") -> LoggedCheckpoint:
        """Append a CHECKPOINT marker now; ``consistency`` "application" only while the
        group's guests are frozen (``seawall.agent.protect.quiesce``)."""
        if len(name.encode()) > MAX_CHECKPOINT_NAME_BYTES:
            raise InvalidInput(f"checkpoint name longer than {MAX_CHECKPOINT_NAME_BYTES} bytes")
        if not self.protecting:
            raise NotReady(
                f"group {self.spec.name} is {self.state}: checkpoints resume when it is "
                "protecting"
            )
        now_ns = time.time_ns()
        encoded = name.encode()
        record = self.stream.append(RecordKind.CHECKPOINT, now_ns, 0,
                                    CONSISTENCY.index(consistency), len(encoded), encoded)
        entry = LoggedCheckpoint(record.seq, now_ns, name, tagged, consistency=consistency)
        self.checkpoints.append(entry)
        self.stream_changed.set()
        return entry

    async def final_checkpoint(self, name: str, timeout_s: float) -> LoggedCheckpoint:
        """Tag ``name`` once no sync runs, and wait until the recovery site has it durable.

        For a failover with the source shut down: the front end takes no writes any more,
        so the checkpoint holds every write the volumes took. NotReady on timeout.
        """
        deadline_s = time.monotonic() + timeout_s
        while not self.protecting:
            if time.monotonic() > deadline_s:
                raise NotReady(f"group {self.spec.name} is {self.state}: no final checkpoint "
                               f"within {timeout_s:g} s")
            await asyncio.sleep(0.1)
        entry = self.tag_checkpoint(name)
        await self.persist_checkpoints()
        while self.stream.acked_seq < entry.seq:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                raise NotReady(f"group {self.spec.name}: the recovery site did not take the "
                               f"last writes within {timeout_s:g} s ({self.state}, "
                               f"{self.stream.buffered_bytes} bytes not acknowledged)")
            self.acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acked.wait(), min(remaining_s, 0.5))
        return entry

    async def persist_checkpoints(self) -> None:
        await self.checkpoints.persist()

    def reconfigure(self) -> None:
        """The spec's checkpoint interval changed: time the next checkpoint by it from now,
        rather than after an old, maybe long, interval runs out."""
        if self._timer_task is not None:
            self._timer_task.cancel()
            self._timer_task = asyncio.create_task(self._checkpoint_timer())

    def seal(self, marker_seq: int, group_checkpoint: int) -> bool:
        """Append the SEAL of marker ``marker_seq`` (a group spanning agents); False, and
        nothing appended, unless still protecting: the marker may be gone with a dropped
        stream, and a seal must never come without its marker."""
        marker = self.checkpoints.find(marker_seq)
        if not self.protecting or marker is None or marker.lost:
            return False
        self.stream.append(RecordKind.SEAL, time.time_ns(), 0, marker_seq, group_checkpoint)
        self.stream_changed.set()
        return True

    async def _checkpoint_timer(self) -> None:
        # A group spanning agents takes its checkpoints at its lead (``Coordinator``).
        while self.spec.coordination is None:
            await asyncio.sleep(self.spec.checkpoint_interval_s)
            if self.protecting and not self.spec.fenced:
                self.tag_checkpoint("", tagged=False)

    def checkpoint_list(self) -> list[dict[str, Any]]:
        return self.checkpoints.describe(self.stream.acked_seq)

    # --- status ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.spec.fenced:
            return "failed-over"
        if self.refusal is not None:
            return "paused" if self.refusal[0] in PAUSE_CODES else "error"
        if self.mirrors.lost:
            return "sync-required"
        if self.protecting:
            return "protecting"
        if self._initial:
            return "initial-sync"
        return f"{self.plan.kind}-sync"

    def status(self) -> dict[str, Any]:
        newest = self.checkpoints.newest_replicated(self.stream.acked_seq)
        return {
            "group_id": self.spec.group_id,
            "name": self.spec.name,
            "role": "protected",
            "checkpoint_interval_s": self.spec.checkpoint_interval_s,
            "quiesce_every_s": self.spec.quiesce_every_s,
            "state": self.state,
            "phase": "tracking" if self.tracking else "syncing" if self.syncing else "",
            "link_up": self.link_up,
            "last_error": self.last_error,
            "refusal": None if self.refusal is None else
                {"code": self.refusal[0], "message": self.refusal[1]},
            "acked_seq": self.stream.acked_seq,
            "last_seq": self.stream.last_seq,
            "buffered_bytes": self.stream.buffered_bytes,
            "buffer_limit_bytes": self.buffer_limit_bytes,
            "buffered_records": self.stream.record_count,
            "overflows": self.overflows,
            "dirty_bytes": self.plan.pending_bytes,
            "dirty_map_bytes": self.plan.memory_bytes,
            "written_bytes": sum(c.written_bytes for c in self.writes),
            "write_count": sum(c.write_count for c in self.writes),
            "newest_replicated_checkpoint_ns": newest.time_ns if newest else None,
            "rpo_s": (time.time_ns() - newest.time_ns) / 1e9 if newest else None,
            "sync": self.sync.describe(),
            "mirrors": self.mirrors.describe(self.syncing, self.plan),
            "mirror_refusals": self.mirrors.refusals(),
        }

