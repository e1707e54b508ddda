"""JournalAging: the recovery site's retention loop for one group (a shell around the policy).

Rules and invariants:
- Every ``RETENTION_PERIOD_S`` a ``step`` runs in a worker thread (``asyncio.to_thread``):
  it asks ``RetentionPolicy`` what to apply from the journal's size, the clock and whether
  the journal found its filesystem full, and applies it with ``Journal.apply_through``,
  which writes and fsyncs replicas and deletes segments, so never on the event loop. The
  journal's ``index_lock`` makes that safe next to the receiver appending from the loop
  thread (see ``Journal``'s thread rules). The group's session lock is not taken: a
  replication session holds it for as long as it lasts.
- Steps never overlap (the loop awaits each one) and ``stop`` waits for a running step
  rather than abandoning its thread over a half-done apply.
- Open views pin their checkpoints (exports, delta-sync head views): a step then applies
  only up to the frame boundary below the oldest pin and status names it
  (``retention_blocked_by``). The journal may then grow past its hard limit; it is not
  refused writes for an export.
- A failed step (e.g. ENOSPC writing a replica) is logged, shown as ``retention_error`` and
  tried again at the next period; the journal's floor makes the retry go at least as far.
- A full filesystem makes a step apply early only while the journal has no room (no
  space freed since it filled: ``Journal.has_room``), not at every period until an append
  succeeds: the sender backs off for up to half a minute between attempts, and applying
  another tenth each period meanwhile would eat the history while nothing arrives.
- The early horizon (see ``seawall.journal.policy``) is kept in memory only: after a
  restart ``history_short`` shows again from the next early apply on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from seawall.errors import Conflict, NotReady, SeawallError
from seawall.journal.journal import Journal
from seawall.journal.policy import RetentionPolicy

log = logging.getLogger(__name__)

RETENTION_PERIOD_S = 1.0


class JournalAging:
    def __init__(
        self,
        journal: Journal,
        policy: RetentionPolicy,
        group_name: str,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.journal = journal
        self.policy = policy
        self.group_name = group_name
        self._clock_ns = clock_ns
        self.early_horizon_ns: int | None = None
        self.blocked_by: int | None = None
        self.error: str | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start (again: a live failover's rollback restarts what its start stopped)."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RETENTION_PERIOD_S)
                return
            await asyncio.to_thread(self.step, self._clock_ns())

    def step(self, now_ns: int) -> None:
        """Apply what the policy asks for at ``now_ns`` (blocking: call it off the loop)."""
        journal = self.journal
        try:
            stats = journal.stats()
            decision = self.policy.decide(
                stats.bytes_on_disk, now_ns, filesystem_full=not journal.has_room()
            )
            aged_seq = journal.retention.seq_older_than(decision.apply_before_ns)
            target = aged_seq
            if decision.free_bytes > 0:
                target = max(target, journal.retention.seq_to_free(decision.free_bytes))
            # An apply that failed midway is finished, even if what asked for it (a full
            # filesystem) is gone: checkpoints below its floor are hidden until then.
            target = max(target, journal.retention.floor_seq)
            pinned = journal.oldest_view_seq()
            self.blocked_by = pinned if pinned is not None and target >= pinned else None
            if pinned is not None and target >= pinned:
                target = pinned - 1
            if target > stats.base_seq:
                base = journal.apply_through(target)
                if base > aged_seq:  # records inside the history went: it is short now
                    oldest = journal.oldest_time_ns()
                    self.early_horizon_ns = now_ns if oldest is None else oldest
            self.error = None
        except Conflict:
            pass  # a view opened since we looked: the next step goes below it
        except (OSError, SeawallError) as exc:
            if self.error != str(exc):
                log.warning("group %s: journal retention failed: %s", self.group_name, exc,
                            extra={"group": self.group_name})
            self.error = str(exc)

    def status(self, now_ns: int) -> dict[str, Any]:
        journal, policy = self.journal, self.policy
        stats = journal.stats()
        try:
            oldest_checkpoint_ns: int | None = journal.oldest_checkpoint().time_ns
        except NotReady:
            oldest_checkpoint_ns = None
        return {
            "base_seq": stats.base_seq,
            "journal_bytes": stats.bytes_on_disk,
            "journal_segments": stats.segment_count,
            "journal_max_bytes": policy.journal_max_bytes,
            "journal_warning": policy.warning(stats.bytes_on_disk),
            "journal_warning_ratio": policy.warn_ratio,
            "journal_full": journal.full_error is not None,
            "journal_full_error": journal.full_error,
            "history_target_s": policy.history_s,
            "history_covered_s": policy.history_covered_s(oldest_checkpoint_ns, now_ns),
            "history_short": policy.history_short(self.early_horizon_ns, now_ns),
            "applied_bytes": stats.applied_bytes,
            "applies": stats.apply_count,
            "retention_blocked_by": self.blocked_by,
            "retention_error": self.error,
        }
