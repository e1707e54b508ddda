"""Head views (for delta-sync hashing): the image at any durable seq, pinned against retention."""

from __future__ import annotations

from pathlib import Path

import pytest
from journal_model import Stream, make_stream, open_journal

from seawall.errors import Conflict, NotFound, NotReady
from seawall.journal import Journal
from seawall.wire.frames import FRAME_HEADER, decode_records, parse_header
from seawall.wire.records import RecordKind


def image_at(stream: Stream, volume: int, seq: int) -> bytes:
    """The model's image of ``volume`` after every record up to ``seq``, checkpoint or not."""
    image = bytearray(stream.replicas[volume])
    for frame, _directory in stream.frames:
        for record in decode_records(parse_header(frame), frame[FRAME_HEADER.size :]):
            if record.seq > seq or record.volume != volume:
                continue
            if record.kind == RecordKind.WRITE:
                image[record.offset : record.offset + record.length] = record.payload
            elif record.kind == RecordKind.ZERO:
                image[record.offset : record.offset + record.length] = bytes(record.length)
    return bytes(image)


def in_sync_window(stream: Stream) -> list[int]:
    """Seqs strictly inside a SYNC_BEGIN..SYNC_END window that are not checkpoints."""
    seqs, inside = [], False
    for _frame, directory in stream.frames:
        for header in directory.headers:
            if header.kind == RecordKind.SYNC_BEGIN:
                inside = True
            elif header.kind == RecordKind.SYNC_END:
                inside = False
            elif inside and header.kind != RecordKind.CHECKPOINT:
                seqs.append(header.seq)
    return seqs


def filled(root: Path, stream: Stream, frame_count: int | None = None) -> Journal:
    journal = open_journal(root, stream)
    for frame, directory in stream.frames[:frame_count]:
        journal.append_frame(frame, directory)
    journal.sync()
    return journal


def test_head_views_read_the_image_at_any_durable_seq(tmp_path: Path) -> None:
    stream = make_stream(91, record_count=250)
    journal = filled(tmp_path, stream)
    window = in_sync_window(stream)
    assert len(window) > 10
    for seq in [0, window[0], window[len(window) // 2], window[-1], stream.last_seq]:
        for volume in stream.replicas:
            with journal.head_view(volume, seq) as view:
                assert view.read(0, view.size_bytes) == image_at(stream, volume, seq), seq
    # An ordinary view refuses what a head view shows: it is not a consistent checkpoint.
    with pytest.raises(NotFound):
        journal.view(0, window[0])
    journal.close()


def test_a_head_view_ignores_frames_appended_after_it(tmp_path: Path) -> None:
    stream = make_stream(92, record_count=200)
    half = len(stream.frames) // 2
    journal = filled(tmp_path, stream, half)
    seq = journal.durable_seq
    view = journal.head_view(7, seq)
    for frame, directory in stream.frames[half:]:
        journal.append_frame(frame, directory)
    journal.sync()
    assert view.read(0, view.size_bytes) == image_at(stream, 7, seq)
    view.close()
    journal.close()


def test_head_view_range(tmp_path: Path) -> None:
    stream = make_stream(93, record_count=150)
    half = len(stream.frames) // 2
    journal = filled(tmp_path, stream, half)
    durable = journal.durable_seq
    journal.append_frame(*stream.frames[half])
    with pytest.raises(NotReady, match=f"durable up to seq {durable}"):
        journal.head_view(0, durable + 1)  # written, not yet durable
    with pytest.raises(NotFound, match="no volume 3"):
        journal.head_view(3, durable)
    base = journal.apply_through(durable // 2)
    assert base > 0
    with pytest.raises(NotFound, match="aged out"):
        journal.head_view(0, base - 1)
    with journal.head_view(0, base) as view:  # the base itself is the replica
        assert view.read(0, view.size_bytes) == image_at(stream, 0, base)
    journal.close()


def test_retention_does_not_pass_an_open_head_view(tmp_path: Path) -> None:
    stream = make_stream(94, record_count=250)
    journal = filled(tmp_path, stream)
    seq = in_sync_window(stream)[-1]
    view = journal.head_view(7, seq)
    with pytest.raises(Conflict, match="is open"):
        journal.apply_through(stream.last_seq)
    assert journal.base_seq == 0
    base = journal.apply_through(seq - 1)  # up to the frame boundary below it: allowed
    assert 0 < base < seq
    assert view.read(0, view.size_bytes) == image_at(stream, 7, seq)
    view.close()
    assert journal.apply_through(stream.last_seq) == stream.last_seq
    journal.close()
