"""One contract suite for every export backend the NBD front end serves.

Each kind of backend (``seawall.agent.frontend.backend.ExportBackend``) is built on real
files in tmp_path by one factory in ``KINDS``: a file volume, a point-in-time view of a
real journal (records of a random stream up to a checkpoint in its middle), a scratch
image and a live image over such a view. The same tests run against each, byte-exact
against a bytearray model of what the export must read:

- size and read-only flag are reported; reads (aligned, unaligned, at the end, across the
  journal's extents) return the model's bytes;
- where writes are allowed: writes, write-zeroes and trim read back (zeros for both), and
  flush keeps the content; a read-only export refuses every change with EPERM (or EROFS)
  and nothing changes;
- a file volume is also served read-only (a fenced group's): it refuses like a view;
- a range past the end is refused as the NBD core refuses it (ENOSPC for WRITE and
  WRITE_ZEROES, EINVAL for READ and TRIM, EPERM first on a read-only export), and changes
  nothing: a file volume does not grow.

A new kind (the capture sink of the VM issue) is one more factory in ``KINDS``.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from journal.journal_model import make_stream, open_journal
from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.images.exports import PointInTimeBackend
from seawall.agent.images.live import LiveImage
from seawall.agent.images.scratch import ScratchImage
from seawall.agent.protect.volumes import FileVolume
from seawall.journal.view import PointInTimeView

VOLUME = 7
SIZE_BYTES = 50_001  # not a whole number of blocks: the end is unaligned
READ_ONLY_ERRNOS = (errno.EPERM, errno.EROFS)


@dataclass
class Subject:
    backend: ExportBackend
    model: bytearray
    writable: bool


Factory = Callable[[Path], tuple[ExportBackend, bytes, Callable[[], None]]]


def _journal_view(root: Path) -> tuple[PointInTimeView, bytes]:
    """A view of a real journal at a checkpoint with records before and after it."""
    stream = make_stream(5, record_count=300, volume_sizes={0: 64 * 1024, VOLUME: SIZE_BYTES})
    journal = open_journal(root, stream)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    journal.sync()
    checkpoint = stream.consistent()[len(stream.consistent()) // 2]
    assert checkpoint.images[VOLUME] != stream.checkpoints[-1].images[VOLUME]
    return journal.view(VOLUME, checkpoint.seq), checkpoint.images[VOLUME]


def file_volume(root: Path) -> tuple[ExportBackend, bytes, Callable[[], None]]:
    content = random.Random(1).randbytes(SIZE_BYTES)
    path = root / "volume.raw"
    path.write_bytes(content)
    volume = FileVolume("vol", path)
    return volume, content, volume.close


def read_only_volume(root: Path) -> tuple[ExportBackend, bytes, Callable[[], None]]:
    """A file volume opened read-only (as a fenced group's volumes are served)."""
    content = random.Random(1).randbytes(SIZE_BYTES)
    path = root / "volume.raw"
    path.write_bytes(content)
    volume = FileVolume("vol", path, read_only=True)
    return volume, content, volume.close


def point_in_time(root: Path) -> tuple[ExportBackend, bytes, Callable[[], None]]:
    view, content = _journal_view(root)
    return PointInTimeBackend("pit", view), content, view.close


def scratch_image(root: Path) -> tuple[ExportBackend, bytes, Callable[[], None]]:
    view, content = _journal_view(root)
    image = ScratchImage("scratch", view, root / "image.scratch", limit_bytes=1 << 20)
    return image, content, image.close


def live_image(root: Path) -> tuple[ExportBackend, bytes, Callable[[], None]]:
    view, content = _journal_view(root)
    (root / "live").mkdir()
    image = LiveImage("live", view, root / "live", "vol")
    return image, content, image.close


KINDS: dict[str, Factory] = {
    "file-volume": file_volume,
    "read-only-volume": read_only_volume,
    "point-in-time": point_in_time,
    "scratch-image": scratch_image,
    "live-image": live_image,
}


@pytest.fixture(params=sorted(KINDS))
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    backend, content, close = KINDS[request.param](tmp_path)
    try:
        yield Subject(backend, bytearray(content), not backend.info.read_only)
    finally:
        close()


def whole(backend: ExportBackend) -> bytes:
    return backend.read(0, backend.info.size_bytes)


def refused(errnos: tuple[int, ...], call: Callable[..., object], *args: object) -> None:
    with pytest.raises(OSError) as caught:
        call(*args)
    assert caught.value.errno in errnos, caught.value


def test_size_and_read_only_flag_are_reported(subject: Subject) -> None:
    assert subject.backend.info.size_bytes == len(subject.model) == SIZE_BYTES
    assert subject.backend.info.read_only is not subject.writable


def test_reads_aligned_unaligned_at_the_end_and_across_extents(subject: Subject) -> None:
    backend, model = subject.backend, subject.model
    ranges = [(0, 4096), (4096, 8192), (1, 4095), (511, 1025), (SIZE_BYTES - 1, 1),
              (SIZE_BYTES - 4097, 4097), (SIZE_BYTES, 0), (0, 0), (0, SIZE_BYTES)]
    rnd = random.Random(2)
    ranges += [(offset, rnd.randrange(1, SIZE_BYTES - offset + 1))
               for offset in (rnd.randrange(SIZE_BYTES) for _ in range(200))]
    for offset, length in ranges:
        assert backend.read(offset, length) == model[offset:offset + length], (offset, length)


def test_writes_zeroes_and_trims_read_back_and_survive_a_flush(subject: Subject) -> None:
    if not subject.writable:
        pytest.skip("a read-only export: see the refusals")
    backend, model = subject.backend, subject.model
    rnd = random.Random(3)
    for step in range(300):
        offset = rnd.randrange(SIZE_BYTES)
        length = rnd.randrange(1, min(9000, SIZE_BYTES - offset) + 1)
        action = step % 4
        if action < 2:
            data = rnd.randbytes(length)
            backend.write(offset, data if action else memoryview(data))
            model[offset:offset + length] = data
        elif action == 2:
            backend.write_zeroes(offset, length)
            model[offset:offset + length] = bytes(length)
        else:
            backend.trim(offset, length)  # trim reads as zeros on every kind (documented)
            model[offset:offset + length] = bytes(length)
        probe = rnd.randrange(SIZE_BYTES)
        assert backend.read(probe, SIZE_BYTES - probe) == model[probe:], step
    backend.write(SIZE_BYTES - 3, b"end")
    model[-3:] = b"end"
    asyncio.run(backend.flush())
    assert whole(backend) == model


def test_a_read_only_export_refuses_every_change(subject: Subject) -> None:
    if subject.writable:
        pytest.skip("a writable export: see the writes")
    backend = subject.backend
    refused(READ_ONLY_ERRNOS, backend.write, 0, b"x" * 512)
    refused(READ_ONLY_ERRNOS, backend.write_zeroes, 0, 512)
    refused(READ_ONLY_ERRNOS, backend.trim, 0, 512)
    refused(READ_ONLY_ERRNOS, backend.write, SIZE_BYTES, b"x")  # EPERM comes first
    refused(READ_ONLY_ERRNOS, backend.write_zeroes, SIZE_BYTES, 1)
    asyncio.run(backend.flush())
    assert whole(backend) == subject.model


def test_out_of_range_requests_are_refused_as_the_nbd_core_does(subject: Subject) -> None:
    backend = subject.backend
    for offset, length in ((SIZE_BYTES, 1), (SIZE_BYTES - 1, 2), (SIZE_BYTES + 4096, 4096),
                           (-1, 1), (0, -1), (0, SIZE_BYTES + 1)):
        refused((errno.EINVAL,), backend.read, offset, length)
        if subject.writable:
            refused((errno.ENOSPC,) if offset >= 0 and length >= 0 else (errno.EINVAL,),
                    backend.write_zeroes, offset, length)
            refused((errno.EINVAL,), backend.trim, offset, length)
            if length > 0:
                refused((errno.ENOSPC,) if offset >= 0 else (errno.EINVAL,),
                        backend.write, offset, b"x" * length)
    assert whole(backend) == subject.model
    assert backend.info.size_bytes == SIZE_BYTES
    if isinstance(backend, FileVolume):
        assert backend.path.stat().st_size == SIZE_BYTES  # the file did not grow


def test_flush_keeps_the_content(subject: Subject) -> None:
    asyncio.run(subject.backend.flush())
    assert whole(subject.backend) == subject.model
