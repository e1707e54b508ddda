"""Segment store details: foreign segments, the file header, the read descriptor pool."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from journal_model import make_stream, open_journal

from seawall.journal.readers import ReadPool
from seawall.journal.segment_format import SEGMENT_HEADER, SEGMENT_MAGIC, segment_file_name


def test_segment_of_another_journal_is_not_taken(tmp_path: Path) -> None:
    stream = make_stream(71, record_count=40)
    for name in ("a", "b"):
        journal = open_journal(tmp_path / name, stream)
        if name == "a":
            for frame, directory in stream.frames:
                journal.append_frame(frame, directory)
            journal.sync()
        journal.close()
    segment = segment_file_name(1)
    shutil.copy(tmp_path / "a" / "journal" / segment, tmp_path / "b" / "journal" / segment)
    journal = open_journal(tmp_path / "b", stream)
    assert journal.written_seq == 0
    assert not (tmp_path / "b" / "journal" / segment).exists()
    journal.close()


def test_segment_header_layout(tmp_path: Path) -> None:
    stream = make_stream(72, record_count=10)
    journal = open_journal(tmp_path, stream)
    journal.append_frame(*stream.frames[0])
    journal.sync()
    journal.close()
    head = (tmp_path / "journal" / segment_file_name(1)).read_bytes()[: SEGMENT_HEADER.size]
    magic, version, _reserved, journal_id, first_seq, _crc = SEGMENT_HEADER.unpack(head)
    assert (magic, version, first_seq, len(journal_id)) == (SEGMENT_MAGIC, 1, 1, 16)


def test_read_pool_keeps_few_descriptors_open(tmp_path: Path) -> None:
    paths = []
    for index in range(6):
        path = tmp_path / f"f{index}"
        path.write_bytes(bytes([index]) * 10)
        paths.append(path)
    before = len(os.listdir("/proc/self/fd"))
    pool = ReadPool(capacity=2)
    for _round in range(3):
        for index, path in enumerate(paths):
            assert pool.pread(index, path, 3, 2) == bytes([index]) * 3
            assert len(os.listdir("/proc/self/fd")) <= before + 2
    pool.close()
    assert len(os.listdir("/proc/self/fd")) == before
