"""What a protected volume held at any checkpoint the agent stamps: a timeline of writes.

A tagged checkpoint is made between two writes (the writer's lock held), so its content
is the writer's model. A periodic checkpoint is made by the agent on its own clock, while
writes go on; ``WriteTimeline`` places it between two writes when it can, and otherwise
says it cannot.

Rules and invariants:
- One writer, one write at a time. Write i was first sent at ``sent_ns`` (before its first
  attempt: a write retried after a crash keeps the time of its first attempt) and
  acknowledged at ``acked_ns``; ``sent_ns(i) < acked_ns(i) <= sent_ns(i + 1)``.
- The agent captures a write into the group's stream and stamps a checkpoint in one
  event-loop thread, each in one synchronous step, with the wall clock of the same host
  (``time.time_ns``; a clock step during a run would void this). So a checkpoint stamped
  at ``c`` holds exactly the writes with ``acked_ns < c`` when no write has
  ``sent_ns <= c <= acked_ns``; if one has, its content is unknown (never guessed).
- A listing of the protected site's checkpoints asked at ``listed_ns`` names every
  checkpoint stamped before ``listed_ns`` (the agent appends a checkpoint to its log in
  the step that stamps it). After ``resolve``, writes acknowledged before ``listed_ns`` are
  folded into ``_image`` and dropped: memory is the writes of one polling interval, and a
  checkpoint that shows up later stamped before the fold point is unknown, not guessed.
- ``known`` maps checkpoint id to the sha256 of the volume at it; ``unknown`` holds the
  ids that can not be placed. An id is decided once.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from seawall.errors import SeawallError
from seawall.http import JsonClient

FOLLOW_INTERVAL_S = 0.25
"""How often the follower lists checkpoints: the writes of about this long stay in memory."""


@dataclass(frozen=True, slots=True)
class TimedWrite:
    sent_ns: int
    acked_ns: int
    offset: int
    data: bytes


class WriteTimeline:
    """The acknowledged writes of one writer, in order, and the checkpoints placed so far."""

    def __init__(self, volume_bytes: int) -> None:
        self.known: dict[int, str] = {}
        self.unknown: set[int] = set()
        self._image = bytearray(volume_bytes)  # the volume after every folded write
        self._folded_ns = 0  # every write acknowledged before this is in _image
        self._writes: list[TimedWrite] = []
        self._in_flight_sent_ns: int | None = None
        self._lock = threading.Lock()  # _writes and _in_flight_sent_ns
        self._resolving = threading.Lock()  # one resolve at a time: it owns _image

    def begin(self, sent_ns: int) -> None:
        """A write is about to be sent for the first time."""
        with self._lock:
            self._in_flight_sent_ns = sent_ns

    def record(self, sent_ns: int, acked_ns: int, offset: int, data: bytes) -> None:
        """The write begun at ``sent_ns`` was acknowledged."""
        with self._lock:
            self._writes.append(TimedWrite(sent_ns, acked_ns, offset, data))
            self._in_flight_sent_ns = None

    def decided(self, checkpoint: int) -> bool:
        return checkpoint in self.known or checkpoint in self.unknown

    def resolve(self, stamps: Iterable[tuple[int, int]], listed_ns: int) -> None:
        """Place the new checkpoints of a listing (``(id, time_ns)``) asked at ``listed_ns``.

        Call only after the listing's reply arrived: a write begun after that is sent after
        every stamp in it.
        """
        with self._resolving:
            with self._lock:
                writes = list(self._writes)
                in_flight_sent_ns = self._in_flight_sent_ns
            fresh = sorted((time_ns, checkpoint) for checkpoint, time_ns in stamps
                           if not self.decided(checkpoint))
            applied = 0
            for time_ns, checkpoint in fresh:
                if time_ns <= self._folded_ns:
                    self.unknown.add(checkpoint)  # writes after it are folded already
                    continue
                while applied < len(writes) and writes[applied].acked_ns < time_ns:
                    self._apply(writes[applied])
                    applied += 1
                next_sent_ns = (writes[applied].sent_ns if applied < len(writes)
                                else in_flight_sent_ns)
                if next_sent_ns is not None and next_sent_ns <= time_ns:
                    self.unknown.add(checkpoint)  # a write was in flight at the stamp
                else:
                    self.known[checkpoint] = hashlib.sha256(self._image).hexdigest()
            while applied < len(writes) and writes[applied].acked_ns < listed_ns:
                self._apply(writes[applied])
                applied += 1
            self._folded_ns = max(self._folded_ns, listed_ns)
            with self._lock:
                del self._writes[:applied]

    def _apply(self, write: TimedWrite) -> None:
        self._image[write.offset : write.offset + len(write.data)] = write.data


class TimelineFollower:
    """Polls the protected site's checkpoints and places them on the timeline, in a thread.

    A failed listing (the site restarting) is skipped: the next one names the same
    checkpoints. ``catch_up`` places everything stamped until now, from the caller's thread.
    """

    def __init__(self, timeline: WriteTimeline, api_url: str, group: str,
                 interval_s: float = FOLLOW_INTERVAL_S, token: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.timeline = timeline
        self.group = group
        self.interval_s = interval_s
        self.failed_listings = 0
        self._client = JsonClient(api_url, timeout_s=30.0, what="timeline follower",
                                  token=token, tls=tls)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def catch_up(self) -> list[dict[str, Any]]:
        """Place every checkpoint stamped so far; returns the listing it used."""
        listed_ns = time.time_ns()
        listing: list[dict[str, Any]] = self._client.get(
            f"/api/v1/groups/{self.group}/checkpoints")
        self.timeline.resolve(((int(c["id"]), int(c["time_ns"])) for c in listing), listed_ns)
        return listing

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.catch_up()
            except SeawallError:
                self.failed_listings += 1

    def __enter__(self) -> TimelineFollower:
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        self._client.close()
