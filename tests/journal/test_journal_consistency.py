"""A checkpoint's consistency (crash|application) as the recovery site's journal keeps it."""

from __future__ import annotations

from pathlib import Path

from journal_model import frame_directory

from seawall.journal import Journal
from seawall.wire.frames import Codec, Compressor, encode_records
from seawall.wire.records import Record, RecordKind, checkpoint_record, write_record

SIZES = {0: 64 * 1024}


def _journal(root: Path) -> Journal:
    replica = root / "replica-0.img"
    if not replica.exists():
        replica.write_bytes(bytes(SIZES[0]))
    return Journal.open(root / "journal", SIZES, {0: replica})


def test_consistency_is_read_from_the_records_and_survives_a_reopen(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    records = [Record(1, 10, RecordKind.SYNC_BEGIN), write_record(2, 11, 0, 0, b"a" * 512),
               Record(3, 12, RecordKind.SYNC_END), checkpoint_record(4, 13, "plain"),
               checkpoint_record(5, 14, "frozen", "application"),
               checkpoint_record(6, 15, "", "crash")]
    frame = encode_records(records, Compressor(Codec.ZSTD))
    journal.append_frame(frame, frame_directory(frame))
    journal.sync()
    expected = [(4, "crash"), (5, "application"), (6, "crash")]
    assert [(c.seq, c.consistency) for c in journal.checkpoints()] == expected
    assert journal.checkpoint(5).consistency == "application"
    journal.close()
    reopened = _journal(tmp_path)  # rebuilt from the segments: the journal is the truth
    assert [(c.seq, c.consistency) for c in reopened.checkpoints()] == expected
    reopened.close()
