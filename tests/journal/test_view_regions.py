"""Views build their maps region by region, lazily: the model still holds at every cut.

The product's regions are 64 MiB, larger than the model's volumes, so these tests shrink
them (``REGION_SHIFT`` patched in the index and the view) until records straddle many
region boundaries, then check every consistent checkpoint byte for byte — after a
retention apply (which renumbers the entries of each region) and while frames arrive.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from journal_model import assert_checkpoints_match, make_stream, open_journal

from seawall.journal import index as index_module
from seawall.journal import view as view_module


@pytest.fixture(params=[9, 12])
def small_regions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    shift: int = request.param
    monkeypatch.setattr(index_module, "REGION_SHIFT", shift)
    monkeypatch.setattr(view_module, "REGION_SHIFT", shift)
    return shift


def test_checkpoints_read_back_with_small_regions_and_retention(
    tmp_path: Path, small_regions: int,
) -> None:
    stream = make_stream(5, record_count=300, max_write_bytes=3000)
    journal = open_journal(tmp_path, stream, segment_limit_bytes=16 * 1024)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    journal.sync()
    index = journal.volume_index(7)
    assert len(index.regions) > 10  # the records do cross many regions
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    journal.apply_through(stream.last_seq // 2)
    assert journal.base_seq > 0
    assert assert_checkpoints_match(journal, stream, stream.last_seq) > 0
    journal.close()


def test_partial_reads_across_region_edges(tmp_path: Path, small_regions: int) -> None:
    stream = make_stream(8, record_count=200, max_write_bytes=2500)
    journal = open_journal(tmp_path, stream)
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
    journal.sync()
    rnd = random.Random(1)
    region_bytes = 1 << small_regions
    for expected in stream.consistent():
        for volume, image in expected.images.items():
            with journal.view(volume, expected.seq) as view:
                for _ in range(10):
                    edge = rnd.randrange(1, len(image) // region_bytes + 1) * region_bytes
                    offset = max(0, min(edge - rnd.randrange(1, 300), len(image)))
                    length = min(rnd.randrange(1, 700), len(image) - offset)
                    assert view.read(offset, length) == image[offset:offset + length]
    journal.close()


def test_a_view_opened_early_ignores_later_records(tmp_path: Path, small_regions: int) -> None:
    stream = make_stream(13, record_count=300)
    journal = open_journal(tmp_path, stream)
    first = None
    for frame, directory in stream.frames:
        journal.append_frame(frame, directory)
        journal.sync()
        if first is None:
            durable = [cp for cp in stream.consistent() if cp.seq <= journal.durable_seq]
            if durable:
                first = durable[0]
                early = {v: journal.view(v, first.seq) for v in first.images}
    assert first is not None
    for volume, view in early.items():  # regions built only now, after every append
        assert view.read(0, view.size_bytes) == first.images[volume]
        view.close()
    journal.close()
