"""A write load with a reference model: what the protected volume holds, at every tag.

A writer thread keeps writing random data through NBD into the protected volume and
mirrors every acknowledged write into a reference model (a bytearray). Checkpoints are
tagged between two writes (the writer's lock held), and the model's sha256 at that moment
is what the checkpoint must hold.

Rules and invariants:
- The model equals the volume whenever the lock is free and no write is pending.
- A write whose outcome a crash made unknown is written again, whole, once the agent is
  back, before anything else is written or tagged, so the model stays equal to the volume.
- With a ``WriteTimeline``, every acknowledged write is also put on it with the time it was
  first sent and the time it was acknowledged, so periodic checkpoints can be placed too
  (``support.timeline`` says when that is sound).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from seawall.errors import NotReady, PeerError
from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from seawall.nbd.events import NbdError

from .timeline import WriteTimeline

GROUP = "app"
VOLUME = "disk0"
VOLUME_BYTES = 16 << 20
WRITE_LENGTHS = (4096, 4096, 16384, 65536, 262144)
WRITE_PAUSE_S = 0.002
"""Between two writes of the writer thread: keeps the load high but bounded on 2 cores."""
CHECKPOINT_INTERVAL_S = 0.5
PRELOAD_WRITES = 50
"""Written before protection: the initial sync must carry them."""
RETRY_PAUSE_S = 0.05


class Writer:
    """Random writes into the protected volume through NBD, mirrored into ``model``."""

    def __init__(self, uri: str, seed: int, volume_bytes: int = VOLUME_BYTES,
                 timeline: WriteTimeline | None = None,
                 write_pause_s: float = WRITE_PAUSE_S) -> None:
        self.uri = uri
        self.volume_bytes = volume_bytes
        self.model = bytearray(volume_bytes)
        self.timeline = timeline
        self.write_pause_s = write_pause_s
        self.lock = threading.Lock()  # held for one write + model update, or for a tag
        self.writes = 0
        self.failures = 0
        self.crash: BaseException | None = None
        self._rng = random.Random(seed)
        self._pending: tuple[int, bytes, bool, int] | None = None  # offset, data, zeroes, sent
        self._client: NbdClient | None = None
        self._stop = threading.Event()

    def write(self, count: int) -> None:
        """``count`` writes in the calling thread (no fault expected)."""
        for _ in range(count):
            with self.lock:
                self._write_one()

    def _write_one(self) -> None:
        if self._pending is None:
            length = self._rng.choice(WRITE_LENGTHS)
            offset = self._rng.randrange(0, self.volume_bytes - length + 1, 4096)
            zeroes = self._rng.random() < 0.05
            data = bytes(length) if zeroes else self._rng.randbytes(length)
            sent_ns = time.time_ns()
            if self.timeline is not None:
                self.timeline.begin(sent_ns)
            self._pending = (offset, data, zeroes, sent_ns)
        offset, data, zeroes, sent_ns = self._pending
        if self._client is None:
            self._client = NbdClient(self.uri, timeout_s=10.0).connect()
        if zeroes:
            self._client.write_zeroes(offset, len(data))
        else:
            self._client.write(offset, data)
        if self.timeline is not None:
            self.timeline.record(sent_ns, time.time_ns(), offset, data)
        self.model[offset : offset + len(data)] = data
        self._pending = None
        self.writes += 1

    def _drop_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(NbdError, PeerError, OSError):
                self._client.close()
            self._client = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.lock:
                    self._write_one()
            except (NbdError, PeerError, OSError):  # PeerError: silent past the deadline
                # The agent is gone (or restarting): the pending write is retried, whole.
                self.failures += 1
                self._drop_client()
                self._stop.wait(RETRY_PAUSE_S)
                continue
            except BaseException as exc:
                self.crash = exc
                return
            self._stop.wait(self.write_pause_s)

    @contextlib.contextmanager
    def running(self) -> Iterator[Writer]:
        """Write in a background thread for the duration of the block."""
        thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._stop.clear()
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(30)
            self._drop_client()
        assert not thread.is_alive(), "the writer thread hangs"
        assert self.crash is None, f"the writer crashed: {self.crash!r}"

    def _settled(self, timeout_s: float) -> threading.Lock:
        """Take the lock at a point where the model equals the volume (no unknown write)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.lock.acquire()
            if self._pending is None:
                return self.lock
            self.lock.release()
            assert time.monotonic() < deadline, "a write stays unknown: the agent is not back"
            time.sleep(0.02)

    def checkpoint(self, site: LocalSite, name: str, timeout_s: float = 30.0) -> tuple[int, str]:
        """Tag a checkpoint between two writes; returns its id and the model's sha256."""
        deadline = time.monotonic() + timeout_s
        while True:
            lock = self._settled(timeout_s)
            try:
                entry = site.api.post(f"/api/v1/groups/{GROUP}/checkpoints", {"name": name})
                return int(entry["id"]), hashlib.sha256(self.model).hexdigest()
            except NotReady:  # a resync is running: checkpoints resume after it
                assert time.monotonic() < deadline, "checkpoints did not resume in time"
            finally:
                lock.release()
            time.sleep(0.05)

    def quiet(self, duration_s: float) -> QuietWindow:
        """No write for ``duration_s``: any checkpoint made meanwhile holds the model."""
        lock = self._settled(30.0)
        try:
            start_ns = time.time_ns()
            sha256 = hashlib.sha256(self.model).hexdigest()
            time.sleep(duration_s)
            return QuietWindow(start_ns, time.time_ns(), sha256)
        finally:
            lock.release()


@dataclass(frozen=True)
class QuietWindow:
    start_ns: int
    end_ns: int
    sha256: str

    def holds(self, checkpoint: dict[str, Any]) -> bool:
        return self.start_ns < int(checkpoint["time_ns"]) < self.end_ns


def protect(prod: LocalSite, dr: LocalSite, seed: int, pair: bool = True,
            checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
            volume_bytes: int = VOLUME_BYTES, timeline: WriteTimeline | None = None,
            write_pause_s: float = WRITE_PAUSE_S) -> Writer:
    """Pair, create a volume with data on it, protect it, wait for the initial sync."""
    if pair:
        prod.pair_with(dr)
    volume = prod.api.post("/api/v1/volumes", {"name": VOLUME, "size_bytes": volume_bytes})
    writer = Writer(volume["nbd_uri"], seed, volume_bytes, timeline, write_pause_s)
    writer.write(PRELOAD_WRITES)
    prod.api.post("/api/v1/groups", {"name": GROUP, "volumes": [VOLUME], "to": dr.name,
                                     "checkpoint_interval_s": checkpoint_interval_s})
    prod.wait_protecting(GROUP, timeout_s=30)
    return writer
