"""Views read a raw frame's records one by one, hashed on every read (``read_records``).

The model's checkpoints must read back byte for byte with raw, zstd and lz4 frames, from
the page cache and with the segments evicted from it (then the frames are read ahead
whole first); a corrupt record is ``CorruptData`` (EIO over NBD), never wrong data; and
a record is read alone: damage to another record of its frame does not touch it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from journal_model import assert_checkpoints_match, frame_directory, make_stream, open_journal

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.agent.images.exports import PointInTimeBackend
from seawall.errors import CorruptData
from seawall.journal import Journal
from seawall.nbd import NbdClient, NbdError
from seawall.nbd import constants as c
from seawall.wire.frames import Codec, Compressor, encode_records
from seawall.wire.records import Record, RecordKind, checkpoint_record, write_record
from support.loop_thread import LoopThread

VOLUME_BYTES = 64 * 1024


def evict(journal_dir: Path) -> None:
    """Drop the segments' (clean, synced) pages from the page cache."""
    for segment in journal_dir.glob("seg-*.swj"):
        fd = os.open(segment, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@pytest.mark.parametrize("codecs", [(Codec.NONE,), (Codec.ZSTD,), (Codec.LZ4,)],
                         ids=["raw", "zstd", "lz4"])
@pytest.mark.parametrize("cached", [True, False], ids=["cached", "evicted"])
def test_checkpoints_and_partial_reads_match_the_model(
    tmp_path: Path, codecs: tuple[Codec, ...], cached: bool
) -> None:
    stream = make_stream(11, record_count=250, max_write_bytes=6000, codecs=codecs)
    journal = open_journal(tmp_path, stream)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    journal.sync()
    if not cached:
        evict(tmp_path / "journal")
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    rnd = random.Random(3)
    for expected in stream.consistent():
        for volume, image in expected.images.items():
            with journal.view(volume, expected.seq) as view:
                for _ in range(20):
                    if not cached:
                        evict(tmp_path / "journal")
                    offset = rnd.randrange(len(image))
                    length = rnd.randrange(min(20_000, len(image) - offset) + 1)
                    assert view.read(offset, length) == image[offset : offset + length]
    journal.close()


def _two_record_journal(tmp_path: Path, codec: Codec) -> tuple[Journal, int, bytes, bytes]:
    """A journal whose one data frame holds record A (at 0) and record B (at 16 KiB); its
    checkpoint (returned) is in a frame of its own."""
    replica = tmp_path / "replica.img"
    replica.write_bytes(bytes(VOLUME_BYTES))
    journal = Journal.open(tmp_path / "journal", {0: VOLUME_BYTES}, {0: replica})
    a = b"A-record" * 512
    b = random.Random(5).randbytes(4096)
    frames = [
        [Record(1, 1, RecordKind.SYNC_BEGIN), Record(2, 2, RecordKind.SYNC_END)],
        [write_record(3, 3, 0, 0, a), write_record(4, 4, 0, 16384, b)],
        [checkpoint_record(5, 5, "cp")],
    ]
    for records in frames:
        frame = encode_records(records, Compressor(codec))
        journal.append_frame(frame, frame_directory(frame))
    journal.sync()
    return journal, 5, a, b


def _damage(journal_dir: Path, needle: bytes) -> None:
    """Flip one byte of ``needle`` where it is stored in a segment."""
    (segment,) = journal_dir.glob("seg-*.swj")
    data = bytearray(segment.read_bytes())
    position = data.index(needle) + len(needle) // 2
    data[position] ^= 0xFF
    segment.write_bytes(bytes(data))


def test_a_corrupt_raw_record_is_refused_and_its_neighbour_still_served(tmp_path: Path) -> None:
    journal, checkpoint, a, b = _two_record_journal(tmp_path, Codec.NONE)
    _damage(tmp_path / "journal", a)
    with journal.view(0, checkpoint) as view:
        with pytest.raises(CorruptData, match="record 3: payload checksum mismatch"):
            view.read(0, 4096)
        with pytest.raises(CorruptData):
            view.read(100, 10)  # a part of it: the whole record is read and checked
        # Only B's own bytes are read for B (the frame's body hash, which A's damage
        # breaks, is not needed): it is served, and so is the replica around it.
        assert view.read(16384, 4096) == b
        assert view.read(8192, 16384) == bytes(8192) + b + bytes(4096)
    journal.close()


def test_a_corrupt_compressed_frame_is_refused(tmp_path: Path) -> None:
    journal, checkpoint, _a, _b = _two_record_journal(tmp_path, Codec.ZSTD)
    (segment,) = (tmp_path / "journal").glob("seg-*.swj")
    data = bytearray(segment.read_bytes())
    checkpoint_frame = encode_records([checkpoint_record(5, 5, "cp")], Compressor(Codec.ZSTD))
    data[-len(checkpoint_frame) - 20] ^= 0xFF  # inside the compressed blob of the data frame
    segment.write_bytes(bytes(data))
    with journal.view(0, checkpoint) as view:
        for offset in (0, 16384):
            with pytest.raises(CorruptData):
                view.read(offset, 4096)
    journal.close()


def test_over_nbd_a_corrupt_record_is_eio_not_wrong_data(tmp_path: Path) -> None:
    journal, checkpoint, a, b = _two_record_journal(tmp_path, Codec.NONE)
    _damage(tmp_path / "journal", a)
    view = journal.view(0, checkpoint)
    backend = PointInTimeBackend("image", view)

    class Catalog:
        def backend(self, name: str) -> ExportBackend | None:
            return backend if name == "image" else None

        def names(self) -> list[str]:
            return ["image"]

    loop = LoopThread()
    socket_path = str(tmp_path / "nbd.sock")

    async def start() -> NbdFrontend:
        frontend = NbdFrontend(Catalog())
        await frontend.start_unix(socket_path)
        return frontend

    frontend = loop.run(start())
    try:
        with NbdClient(f"nbd+unix:///image?socket={socket_path}", timeout_s=10) as client:
            with pytest.raises(NbdError) as info:
                client.read(0, 65536)
            assert info.value.errno == c.EIO
            assert client.read(16384, 4096) == b  # the connection goes on
    finally:
        loop.run(frontend.close())
        loop.stop()
        view.close()
        journal.close()
