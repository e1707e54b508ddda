"""The reply gate: holds a protection group's write acknowledgements during a coordinated
checkpoint (``seawall.agent.protect.coordination``), so that the checkpoint is crash-consistent
across the agents of the group.

One gate per protection group, shared by its volumes and by every NBD connection to them;
the front end (``seawall.agent.frontend.server``) reads it per request. Pure asyncio, no I/O: the
gate keeps reply bytes and hands them back to their connection (a ``ReplySink``).

Rules and invariants:
- While the gate is closed, the replies to every WRITE, WRITE_ZEROES, TRIM and FLUSH the
  front end takes are held (error replies too: an error acknowledges as well); read replies
  never are. ``open()`` hands every held reply to its connection, per connection in the
  order they were held, and is idempotent.
- A reply that waits for a flush (FLUSH, FUA) is a ``DeferredReply``, made when the request
  is taken. Taken while the gate is open, it is *owed*: it goes out when its flush is done,
  whatever the gate is then, and ``drained()`` waits for it. Taken while the gate is closed,
  it goes out when both its flush is done and the gate is open; if its flush is still
  running when the gate opens, it becomes owed then (it precedes any later marker).
- ``drained()`` waits for the replies owed when it was called, never for held ones (those
  wait for ``open()``, which comes after ``drained()`` in a round: waiting would deadlock).
- A connection that goes away drops its held replies (``drop``) and abandons its deferred
  ones (``abandon``), so neither ``open()`` nor ``drained()`` waits on a dead client.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class ReplySink(Protocol):
    """The connection a held reply belongs to."""

    def release(self, replies: bytes, count: int) -> None:
        """Send ``count`` held replies, concatenated in the order they were held."""


class DeferredReply:
    """A reply that waits for a flush; ``seq`` is set once it is owed."""

    __slots__ = ("done", "seq")

    def __init__(self, seq: int | None) -> None:
        self.seq = seq
        self.done = False


class ReplyGate:
    """Holds acknowledgements while closed; see the module's rules."""

    def __init__(self) -> None:
        self.closed = False
        self._held: list[tuple[ReplySink, bytes]] = []
        # Owed replies by seq; seqs are given in increasing order and a dict keeps insertion
        # order, so the first key is the oldest reply still owed.
        self._owed: dict[int, DeferredReply] = {}
        self._next_seq = 0
        self._late: dict[DeferredReply, None] = {}  # taken while closed, flush not done yet
        self._drain_waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def held_replies(self) -> int:
        return len(self._held)

    def close(self) -> None:
        self.closed = True

    def open(self) -> None:
        self.closed = False
        for late in self._late:
            self._owe(late)
        self._late.clear()
        if not self._held:
            return
        held, self._held = self._held, []
        by_sink: dict[ReplySink, list[bytes]] = {}
        for sink, reply in held:
            by_sink.setdefault(sink, []).append(reply)
        for sink, replies in by_sink.items():
            sink.release(b"".join(replies), len(replies))

    async def drained(self) -> None:
        """Return once every reply owed now (taken while open, waiting for its flush) went
        out or was abandoned."""
        target_seq = self._next_seq
        if self._drained_up_to(target_seq):
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (target_seq, waiter)
        self._drain_waiters.append(entry)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(entry)

    # --- the front end's side ------------------------------------------------------------

    def hold(self, sink: ReplySink, reply: bytes) -> None:
        """Keep ``reply`` until ``open()``; only while closed."""
        if not self.closed:
            raise RuntimeError("a reply can only be held while the gate is closed")
        self._held.append((sink, reply))

    def drop(self, sink: ReplySink) -> None:
        """Forget the held replies of ``sink`` (its client is gone)."""
        self._held = [entry for entry in self._held if entry[0] is not sink]

    def defer(self) -> DeferredReply:
        """A request whose reply waits for a flush was taken (call it then, not later)."""
        deferred = DeferredReply(None)
        if self.closed:
            self._late[deferred] = None
        else:
            self._owe(deferred)
        return deferred

    def settle(self, deferred: DeferredReply) -> bool:
        """The flush of ``deferred`` is done: True to send its reply now, False to hold it
        (``hold``) because it was taken after the marker and the gate is still closed."""
        if deferred.done:
            raise RuntimeError("a deferred reply can be settled only once")
        deferred.done = True
        if deferred.seq is None:
            del self._late[deferred]  # still closed: open() makes every late reply owed
            return False
        self._pay(deferred.seq)
        return True

    def abandon(self, deferred: DeferredReply) -> None:
        """The connection of ``deferred`` is gone before its flush was done."""
        if deferred.done:
            return
        deferred.done = True
        if deferred.seq is None:
            del self._late[deferred]
        else:
            self._pay(deferred.seq)

    # --- helpers -------------------------------------------------------------------------

    def _owe(self, deferred: DeferredReply) -> None:
        deferred.seq = self._next_seq
        self._owed[deferred.seq] = deferred
        self._next_seq += 1

    def _pay(self, seq: int) -> None:
        del self._owed[seq]
        for target_seq, waiter in self._drain_waiters:
            if not waiter.done() and self._drained_up_to(target_seq):
                waiter.set_result(None)

    def _drained_up_to(self, target_seq: int) -> bool:
        return not self._owed or next(iter(self._owed)) >= target_seq
