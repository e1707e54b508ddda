"""The one convention of Seawall's sans-IO protocol cores, in the style of h11.

The cores are ``seawall.nbd`` (``NbdServerConnection``, its handshake half
``ServerHandshake``, and ``NbdClientConnection``) and ``seawall.wire``
(``WireConnection``). Each takes bytes in with ``receive_data(bytes)`` (``b""`` = the
peer closed its side), hands events out with ``next_event()`` and turns events into bytes
with ``send(event)``. They share, from this module:

- ``NEED_DATA``: the one sentinel ``next_event`` returns when the next message is not
  complete yet. A singleton (the only member of ``NeedData``), compared with ``is``; never
  an event, never sent.
- Errors of the peer raise ``seawall.errors.ProtocolViolation`` from ``next_event``, as
  h11 raises ``RemoteProtocolError``: the connection then takes no more input (bytes fed
  later are dropped) and every later ``next_event`` raises the same violation again. What
  may still be sent after one is the core's rule (NBD: replies to requests already
  emitted; wire: an ``Error`` telling the peer why). An exception, not an error event:
  a shell cannot forget to handle it (a loop over events that ignores one type would
  read on past a broken stream), it costs nothing on the hot path until raised, and it
  is a ``SeawallError`` with its code, HTTP status and exit code, which the wire shells
  already send back as an ``Error`` frame (``Error.from_exception``).
- Errors of our own code (an event illegal in the current state, a reply the peer does not
  expect) raise ``LocalProtocolError`` from ``send`` and change nothing.
- ``ReceiveBuffer``: the one receive buffer, with the one compaction rule below.
- ``Direction``: each core updates its state machine and its bookkeeping (cookies, seqs,
  pending requests) for an event in one method, ``_process_event(direction, event)``,
  called by ``next_event`` (``IN``) and by ``send`` (``OUT``), as h11's
  ``Connection._process_event``. The rules of a message therefore live in one place for
  both directions; on ``IN`` a broken rule is the peer's (``ProtocolViolation``), on
  ``OUT`` ours (``LocalProtocolError``). The NBD server's hot path skips the call for the
  events it would do nothing for (``seawall.nbd.options``).

``ReceiveBuffer`` rules and invariants:
- Bytes are appended to one ``bytearray`` (``data``) and read from a position (``pos``);
  the cores parse in place with ``struct.unpack_from(data, pos)`` and advance ``pos``.
- Compaction, one rule, applied in ``feed`` before appending (when what is left unread is
  at most the tail of one message): the consumed prefix is dropped once it is at least
  ``COMPACT_MIN_BYTES`` and at least half of the buffer. So every byte is moved at most
  once more on average (the kept tail is never larger than what was dropped), and small
  chunks cost no memmove each. ``data`` is always the same object (compaction and
  ``close`` work in place), so a core may hold it in a local for one ``next_event``.
- ``take(length)`` is how a payload leaves the buffer: ``bytes`` the receiver may keep
  (never a view into a buffer that moves); a large one (``VIEW_MIN_BYTES``) is copied
  once, through a memoryview, a small one by slicing (two copies of a few KiB cost less
  than making the view). The NBD server's WRITE path inlines ``take``.
- ``feed(b"")`` records the end of the stream; anything fed after it is our bug
  (``LocalProtocolError``). After ``close`` (the core's connection ended), bytes fed are
  dropped and the memory is given back.

Pure code: no I/O.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

from seawall.errors import SeawallError

__all__ = [
    "COMPACT_MIN_BYTES",
    "NEED_DATA",
    "VIEW_MIN_BYTES",
    "Direction",
    "LocalProtocolError",
    "NeedData",
    "ReceiveBuffer",
]

COMPACT_MIN_BYTES: Final = 256 * 1024
"""Consumed bytes are dropped from a receive buffer only past this size (and half of it)."""


VIEW_MIN_BYTES: Final = 64 * 1024
"""From this length on, ``take`` copies through a memoryview (one copy instead of two);
below it, making the view costs more than the second copy (4 KiB: the same, measured)."""


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[NeedData.NEED_DATA] = NeedData.NEED_DATA


class Direction(enum.Enum):
    IN = "in"
    """Received from the peer (``next_event``)."""
    OUT = "out"
    """Sent by us (``send``)."""


class LocalProtocolError(SeawallError):
    """Our own code misused a connection: it sent something illegal in its current state."""

    fault = "local"
    code = "local_protocol_error"


class ReceiveBuffer:
    """Bytes received and not parsed yet. See the module docstring for the rules."""

    __slots__ = ("closed", "data", "eof", "pos")

    def __init__(self) -> None:
        self.data = bytearray()
        self.pos = 0
        self.eof = False
        self.closed = False

    @property
    def available(self) -> int:
        """Bytes received and not consumed yet."""
        return len(self.data) - self.pos

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append ``chunk``; ``b""`` marks the end of the stream."""
        if self.eof:
            raise LocalProtocolError("data received after the end of the stream")
        if not chunk:
            self.eof = True
            return
        if self.closed:
            return
        data = self.data
        pos = self.pos
        if pos >= COMPACT_MIN_BYTES and pos * 2 >= len(data):
            del data[:pos]
            self.pos = 0
        data += chunk

    def take(self, length: int) -> bytes:
        """The next ``length`` bytes (all received), consumed, as ``bytes`` of their own."""
        start = self.pos
        stop = start + length
        self.pos = stop
        if length < VIEW_MIN_BYTES:
            return bytes(self.data[start:stop])
        # The slice's export of ``data`` ends with this expression, so ``data`` can grow.
        return bytes(memoryview(self.data)[start:stop])

    def close(self) -> None:
        """Drop everything, now and from now on (the end of stream is still recorded)."""
        self.closed = True
        self.data.clear()
        self.pos = 0
