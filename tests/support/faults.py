"""The faults of the campaign: each one injected into two live sites, with its own repair.

A fault is a kind (``KINDS``) and parameters drawn from the run's seeded generator. Its
method injects it and does what an operator or the environment would do to end it (lift
the link fault, restart the killed process, start the stopped site), and says what the
group must do about it (``Expectation``); waiting for the group to recover and checking
the checkpoints is the campaign's job, the same for every kind.

Rules:
- The protected site's replication goes through ``proxy`` (the recovery site advertises the
  proxy's port); link faults are the proxy's knobs, and every method leaves them all off.
- ``EXPECTED`` is the design: a link fault or a restart of the recovery agent resumes the
  stream and loses no checkpoint; a restart of the protected agent (no dirty map survives)
  and a requested resync cause a delta sync, a clean restart and an overflow a bitmap sync.
  A torn tail resumes if the recovery site is still durable up to what it acknowledged,
  and causes a delta sync (its checkpoints past the tear lost) if not.
- ``mid-sync`` is two faults at once: a second fault (``MID_SYNC_KINDS``) hits the bitmap
  sync that follows an overflow, slowed by a bandwidth cap. Which syncs follow and what is
  lost then depends on timing, so it expects only what every fault does: recovery, and
  every offered checkpoint exact (``inject`` returns no ``Expectation``).
- Durations are drawn so that the link faults fit in the protected site's buffer at the
  campaign's write rate; ``overflow`` stalls the link until the buffer overflows.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seawall.journal.segment_format import SEGMENT_HEADER, segment_id_of
from seawall.localsites import LocalSite

from .cli import seawall
from .faultproxy import FaultProxy, wait_until
from .sitelog import SiteLog
from .sites import kill_agent
from .workload import GROUP

OVERFLOW_TIMEOUT_S = 120.0
SESSION_TIMEOUT_S = 60.0
SYNC_START_TIMEOUT_S = 60.0
ACK_SETTLE_S = 0.5
"""After the recovery site stopped: an ACK it sent before is processed by then."""


@dataclass(frozen=True)
class Expectation:
    sync: str | None  # the sync the fault must cause; None: the stream must resume
    lossless: bool  # no checkpoint may become lost
    writes_fail: bool = False  # the protected agent restarts: NBD writes fail meanwhile


RESUME = Expectation(None, lossless=True)
EXPECTED: dict[str, Expectation | None] = {
    "latency": RESUME, "bandwidth": RESUME, "stall": RESUME, "cut": RESUME,
    "refuse": RESUME, "corrupt": RESUME, "kill-recovery": RESUME,
    "kill-protected": Expectation("delta", lossless=False, writes_fail=True),
    "torn-tail": None,  # depends on where the tear is: see ``FaultInjector.torn_tail``
    "overflow": Expectation("bitmap", lossless=False),
    "clean-restart": Expectation("bitmap", lossless=False, writes_fail=True),
    "resync": Expectation("delta", lossless=True),
}
KINDS = (*EXPECTED, "mid-sync")
MID_SYNC_KINDS = ("cut", "kill-protected", "kill-recovery", "torn-tail", "clean-restart",
                  "resync")


class FaultInjector:
    """Injects one fault of a kind into ``prod`` → ``proxy`` → ``dr`` and repairs it."""

    def __init__(self, prod: LocalSite, dr: LocalSite, proxy: FaultProxy,
                 rng: random.Random, log: SiteLog) -> None:
        self.prod = prod
        self.dr = dr
        self.proxy = proxy
        self.rng = rng
        self.log = log
        self._torn_tail_expectation = RESUME
        self._table: dict[str, Callable[[], str]] = {
            "latency": self.latency, "bandwidth": self.bandwidth, "stall": self.stall,
            "cut": self.cut, "refuse": self.refuse, "corrupt": self.corrupt,
            "kill-protected": self.kill_protected, "kill-recovery": self.kill_recovery,
            "torn-tail": self.torn_tail, "overflow": self.overflow,
            "clean-restart": self.clean_restart, "resync": self.resync,
            "mid-sync": self.mid_sync,
        }
        assert set(self._table) == set(KINDS)

    def inject(self, kind: str) -> tuple[str, Expectation | None]:
        """Inject and repair one fault of ``kind``; its parameters, and what must follow."""
        detail = self._table[kind]()
        if kind not in EXPECTED:
            return detail, None
        expectation = EXPECTED[kind]
        return detail, self._torn_tail_expectation if expectation is None else expectation

    def _hold(self, low_s: float, high_s: float) -> float:
        duration_s = self.rng.uniform(low_s, high_s)
        time.sleep(duration_s)
        return duration_s

    # --- the link --------------------------------------------------------------------------

    def latency(self) -> str:
        delay_s = self.rng.uniform(0.02, 0.2)
        self.proxy.latency_s = delay_s
        try:
            held_s = self._hold(1.0, 4.0)
        finally:
            self.proxy.latency_s = 0.0
        return f"{delay_s * 1000:.0f} ms each way for {held_s:.1f} s"

    def bandwidth(self) -> str:
        cap = self.rng.choice((1, 2, 4, 8)) << 20
        self.proxy.bandwidth_bytes_per_s = cap
        try:
            held_s = self._hold(1.0, 3.0)
        finally:
            self.proxy.bandwidth_bytes_per_s = None
        return f"{cap >> 20} MiB/s for {held_s:.1f} s"

    def stall(self) -> str:
        self.proxy.blackhole = True
        try:
            held_s = self._hold(0.3, 2.5)
        finally:
            self.proxy.blackhole = False
        return f"no byte moves for {held_s:.1f} s"

    def cut(self) -> str:
        count = self.rng.randint(1, 4)
        cut = 0
        for _ in range(count):
            cut += self.proxy.cut()
            self._hold(0.1, 0.6)
        return f"{count} resets ({cut} connections)"

    def refuse(self) -> str:
        self.proxy.drop_new_connections = True
        try:
            self.proxy.cut()
            held_s = self._hold(0.5, 2.0)
        finally:
            self.proxy.drop_new_connections = False
        return f"connections refused for {held_s:.1f} s"

    def corrupt(self) -> str:
        offsets = [self.rng.randrange(0, 256 << 10) for _ in range(self.rng.randint(1, 2))]
        for offset in offsets:
            self.proxy.corrupt_next(offset)
            self._hold(0.3, 1.0)
        return "a byte flipped at upstream offsets " + ", ".join(map(str, offsets))

    def overflow(self) -> str:
        try:
            filled_s = self._stall_until_overflow()
            tracked_s = self._hold(0.2, 2.0)
        finally:
            self.proxy.blackhole = False
        return f"stalled {filled_s:.1f} s until the buffer overflowed, then {tracked_s:.1f} s"

    def _stall_until_overflow(self) -> float:
        """Stall the link (and leave it stalled) until the buffer overflows; seconds it took."""
        before = self.prod.group_status(GROUP)["overflows"]
        self.proxy.blackhole = True
        started = time.monotonic()
        overflowed = wait_until(lambda: self.prod.group_status(GROUP)["overflows"] > before,
                                timeout_s=OVERFLOW_TIMEOUT_S, interval_s=0.1)
        assert overflowed, f"the buffer did not overflow in {OVERFLOW_TIMEOUT_S:.0f} s"
        return time.monotonic() - started

    def mid_sync(self) -> str:
        """Overflow, then a second fault while the bitmap sync crawls through a capped link."""
        cap = self.rng.choice((1, 2)) << 20
        second = self.rng.choice(MID_SYNC_KINDS)
        try:
            self._stall_until_overflow()
            self.proxy.bandwidth_bytes_per_s = cap
            self.proxy.blackhole = False
            syncing = wait_until(lambda: self.prod.group_status(GROUP)["phase"] == "syncing",
                                 timeout_s=SYNC_START_TIMEOUT_S, interval_s=0.05)
            assert syncing, f"no sync started in {SYNC_START_TIMEOUT_S:.0f} s"
            into_s = self._hold(0.0, 2.0)
            detail = self._table[second]()
        finally:
            self.proxy.blackhole = False
            self.proxy.bandwidth_bytes_per_s = None
        return f"{second} ({detail}) {into_s:.1f} s into a bitmap sync at {cap >> 20} MiB/s"

    # --- processes -------------------------------------------------------------------------

    def kill_protected(self) -> str:
        waited_s = self._hold(0.0, 1.0)  # a random point of the write load
        pid = kill_agent(self.prod)
        down_s = self._hold(0.1, 1.0)
        self.prod.stop()
        self.prod.start()  # the manager starts a new agent: no dirty map survived
        return f"agent {pid} after {waited_s:.1f} s, restarted after {down_s:.1f} s"

    def kill_recovery(self) -> str:
        waited_s = self._hold(0.0, 1.0)
        pid = kill_agent(self.dr)
        down_s = self._hold(0.1, 1.5)
        self.dr.stop()  # the manager does not restart its agent by itself
        self.dr.start()
        return f"agent {pid} after {waited_s:.1f} s, restarted after {down_s:.1f} s"

    def clean_restart(self) -> str:
        self.prod.stop()
        down_s = self._hold(0.0, 1.0)
        self.prod.start()
        return f"down {down_s:.1f} s"

    def resync(self) -> str:
        seawall(self.prod, "group", "resync", GROUP)
        return "seawall group resync"

    def torn_tail(self) -> str:
        """Stop the recovery site, cut the end off its newest segment with frames, start it.

        The tear may take frames the recovery site acknowledged (then they and their
        checkpoints are gone, and the protected site must notice and resync) or only
        frames it had not acknowledged yet (then the stream resumes, nothing lost).
        """
        group_id = self.prod.group_status(GROUP)["group_id"]
        self.dr.stop()
        time.sleep(ACK_SETTLE_S)
        acked_seq = self.prod.group_status(GROUP)["acked_seq"]
        directory = self.dr.config.journals_dir / group_id / "journal"
        segment = newest_segment_with_frames(directory)
        frames_bytes = segment.stat().st_size - SEGMENT_HEADER.size
        bound = self.rng.choice((64, 64 << 10, 4 << 20))  # a torn frame ... several frames
        cut = self.rng.randint(1, min(bound, frames_bytes))
        with segment.open("r+b") as handle:
            handle.truncate(segment.stat().st_size - cut)
        mark = self.log.mark(f"cut {cut} bytes off {segment.name}; acked seq {acked_seq}")
        self.dr.start()
        assert wait_until(lambda: self.log.sessions(mark), timeout_s=SESSION_TIMEOUT_S), (
            "the protected site did not reconnect after the torn tail")
        durable_seq = self.log.sessions(mark)[0]
        self._torn_tail_expectation = (RESUME if durable_seq >= acked_seq
                                       else Expectation("delta", lossless=False))
        return (f"{cut} of {frames_bytes} frame bytes cut off {segment.name}, durable "
                f"{durable_seq} of acked {acked_seq}")


def newest_segment_with_frames(directory: Path) -> Path:
    segments = sorted((path for path in directory.iterdir()
                       if segment_id_of(path.name) is not None
                       and path.stat().st_size > SEGMENT_HEADER.size),
                      key=lambda path: segment_id_of(path.name) or 0)
    assert segments, f"no journal segment with frames in {directory}"
    return segments[-1]
