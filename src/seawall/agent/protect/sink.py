"""A capture sink: the NBD export a VM's write-blocking mirror writes into.

QEMU's active mirror (``blockdev-mirror``, ``copy-mode: write-blocking``) sends every write
of the guest, and during its full copy the whole disk, to an NBD node on the agent's Unix
socket; the export it connects to is a sink. The VM's own disk stays the only copy of the
data at the protected site: a sink keeps none.

Rules and invariants:
- A sink has the disk's (virtual) size and is served by name on the agent's NBD socket
  like a volume. It is a member of a protection group like a ``FileVolume``, through the
  same ``capture`` hook (so the group stream, shipping, checkpoints and the recovery site
  see no difference), and the same ``reply_gate``.
- WRITE: captured, then acknowledged. WRITE_ZEROES: captured as a ``ZERO`` record (the
  mirror's full copy sends the source's holes this way; QEMU falls back to writing zero
  buffers if it is not advertised, which would only cost bandwidth).
- TRIM is not advertised (``ExportInfo.can_trim``), so QEMU's NBD client never sends it:
  a guest discard on a source with ``discard=ignore`` leaves the data on the VM's disk,
  and a replayed trim would zero the replica where the source still holds it. (The
  mirror forwards a guest discard to the target after the source took it, whatever the
  source did with it; it also turns the full copy's unallocated-but-not-zero areas into
  discards, which only a backing chain has: those stay as the replica had them.) A TRIM
  that comes anyway is acknowledged and changes nothing: NBD leaves the content of a
  trimmed range unspecified, so keeping the data is correct.
- READ fails with EIO: there is no copy to read. QEMU's mirror never reads its target
  (the NBD driver is opened as a plain protocol node: no format probe), so only a
  misdirected client sees this.
- FLUSH (and FUA) return at once: the VM's disk holds the data, and the guest's flushes
  are not forwarded to a mirror's target anyway (only the job's own flush before READY).
  A sink's write is "durable" once it is in the group's bounded buffer; if the agent dies
  the buffer is lost, the mirror job ends, and the group resyncs: the WAN is never waited
  for in a guest's I/O path.
- A stalled agent must not stall the guest: its connections are ``stall_guarded``
  (``seawall.agent.frontend.stall_guard``).
- Sync reads: a resync reads the disk through QEMU (not through the sink) while the sink
  keeps capturing. Each such read is watched (``watch``/``unwatch``, both on the event
  loop): every WRITE or WRITE_ZEROES captured meanwhile that overlaps it is noted in the
  watch (clipped to it), so the syncer appends none of those bytes (why that is byte
  exact: ``seawall.agent.protect.syncer``).
- Discarding (``discarding`` True): WRITE and WRITE_ZEROES are checked and acknowledged,
  and nothing else: no capture, no watch notes. A mirror that cannot start without a full
  copy (libvirt's block copy) is attached for a comparison this way: its copy phase, and
  the guest writes meanwhile, are all on the VM's disk already, and the comparison reads
  them there once the ``Splitter`` has switched the sink to capture (when the job is
  ready), exactly as if a mirror of new writes only had been attached at the switch.
"""

from __future__ import annotations

import errno

from seawall.agent.frontend.backend import check_range
from seawall.agent.frontend.reply_gate import ReplyGate
from seawall.agent.protect.volumes import CaptureHook, FileVolume
from seawall.nbd.events import ExportInfo
from seawall.wire.records import RecordKind


class ReadWatch:
    """The ranges written into ``[offset, end)`` since a sync read of it was issued."""

    __slots__ = ("end", "offset", "written")

    def __init__(self, offset: int, end: int) -> None:
        self.offset, self.end = offset, end
        self.written: list[tuple[int, int]] = []  # [start, stop), in capture order


class SinkVolume:
    """The capture sink of one disk (``disk``, e.g. ``vda``) of VM ``vm_uuid``."""

    kind = "sink"
    stall_guarded = True  # the front end closes its connections when the agent stalls

    def __init__(self, name: str, size_bytes: int, vm_uuid: str, disk: str) -> None:
        self.name = name
        self.size_bytes = size_bytes
        self.vm_uuid = vm_uuid
        self.disk = disk
        self.info = ExportInfo(name=name, size_bytes=size_bytes, read_only=False,
                               description=f"seawall capture sink of {disk} of VM {vm_uuid}",
                               can_trim=False)
        self.capture: CaptureHook | None = None
        self.reply_gate: ReplyGate | None = None
        self._watches: list[ReadWatch] = []
        self.discarding = False  # see the rules: set and cleared by the Splitter only

    def watch(self, offset: int, length: int) -> ReadWatch:
        """Note the writes into ``[offset, +length)`` from now until ``unwatch``."""
        watch = ReadWatch(offset, offset + length)
        self._watches.append(watch)
        return watch

    def unwatch(self, watch: ReadWatch) -> None:
        self._watches.remove(watch)

    def _noted(self, offset: int, length: int) -> None:
        end = offset + length
        for watch in self._watches:
            if offset < watch.end and watch.offset < end:
                watch.written.append((max(offset, watch.offset), min(end, watch.end)))

    def read(self, offset: int, length: int) -> bytes:
        check_range(self.size_bytes, offset, length)
        raise OSError(errno.EIO, f"sink {self.name} keeps no copy of the disk to read")

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._check_change(offset, len(data), errno.ENOSPC)
        if self.discarding:
            return
        if self._watches:
            self._noted(offset, len(data))
        if self.capture is not None:
            self.capture(RecordKind.WRITE, offset, len(data), bytes(data))

    def write_zeroes(self, offset: int, length: int) -> None:
        self._check_change(offset, length, errno.ENOSPC)
        if self.discarding:
            return
        if self._watches:
            self._noted(offset, length)
        if self.capture is not None:
            self.capture(RecordKind.ZERO, offset, length, b"")

    def trim(self, offset: int, length: int) -> None:
        self._check_change(offset, length, errno.EINVAL)  # then nothing: see the rules

    async def flush(self) -> None:
        return None  # the VM's own disk holds the data: see the rules

    def close(self) -> None:
        return None

    def _check_change(self, offset: int, length: int, past_end: int) -> None:
        if self.info.read_only:
            raise OSError(errno.EPERM, f"sink {self.name} is read-only")
        check_range(self.size_bytes, offset, length, past_end)


ProtectedVolume = FileVolume | SinkVolume
"""What a protection group's members are."""
