"""FailoverTests at the recovery agent, over a real journal: writable images on views.

The images must read as the model at their checkpoint, take writes without touching the
journal or the replicas, pin their checkpoint while they live, and leave nothing behind.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from journal.journal_model import ExpectedCheckpoint, Stream, make_stream
from seawall.agent.failover.drills import FailoverTests, default_scratch_limit_bytes
from seawall.agent.recover.group import RecoveryGroup
from seawall.config import SiteConfig
from seawall.contract.agent import GroupVolume, RecoverySpec
from seawall.errors import Conflict, NotFound

VOLUME_SIZES = {0: 64 * 1024, 7: 50_001}  # volume 7: not a whole number of blocks


@pytest.fixture
def stream() -> Stream:
    return make_stream(5, record_count=400, volume_sizes=VOLUME_SIZES)


@pytest.fixture
def group(tmp_path: Path, stream: Stream) -> RecoveryGroup:
    volumes = [GroupVolume(index=v, name=f"disk{v}", size_bytes=n) for v, n in VOLUME_SIZES.items()]
    root = tmp_path / "group"
    (root / "replicas").mkdir(parents=True)
    for volume, data in stream.replicas.items():
        (root / "replicas" / f"disk{volume}.raw").write_bytes(data)
    group = RecoveryGroup(RecoverySpec(group_id="g-1", name="app", source_site="prod",
                                       volumes=volumes), root)
    for frame, directory in stream.frames:
        group.journal.append_frame(frame, directory)
    group.journal.sync()
    return group


@pytest.fixture
def tests(tmp_path: Path, group: RecoveryGroup) -> tuple[FailoverTests, list[str]]:
    config = SiteConfig.create("dr", tmp_path / "site", "127.0.0.1:1", "127.0.0.1:2")
    disconnected: list[str] = []

    def disconnect(name: str) -> int:
        disconnected.append(name)
        return 0

    groups = {"g-1": group}
    return FailoverTests(config, lambda group_id: groups[group_id], disconnect), disconnected


def checkpoint(stream: Stream, index: int) -> ExpectedCheckpoint:
    return stream.consistent()[index]


def test_images_read_the_checkpoint_and_take_writes_beside_the_journal(
    tests: tuple[FailoverTests, list[str]], group: RecoveryGroup, stream: Stream,
) -> None:
    registry, disconnected = tests
    expected = checkpoint(stream, 0)
    test = registry.start("test-1", "g-1", str(expected.seq), scratch_max_bytes=None)
    assert test["checkpoint"]["id"] == expected.seq
    assert group.journal.oldest_view_seq() == expected.seq  # pinned against retention
    backends = {image["volume"]: registry.backend(image["name"]) for image in test["images"]}
    assert set(registry.names()) == {image["name"] for image in test["images"]}
    for volume, image in expected.images.items():
        backend = backends[f"disk{volume}"]
        assert backend is not None and not backend.info.read_only
        assert backend.read(0, len(image)) == image
        backend.write(100, b"x" * 5000)
        backend.write_zeroes(len(image) - 3000, 3000)
        changed = bytearray(image)
        changed[100:5100] = b"x" * 5000
        changed[len(image) - 3000 :] = bytes(3000)
        assert backend.read(0, len(image)) == changed
        with group.journal.view(volume, expected.seq) as view:  # the journal is untouched
            assert view.read(0, len(image)) == image
    assert test["images"][0]["scratch_limit_bytes"] == default_scratch_limit_bytes(65536)

    stopped = registry.stop("test-1")
    assert sorted(disconnected) == sorted(image["name"] for image in test["images"])
    assert stopped["images"][0]["scratch_used_bytes"] > 0
    assert registry.names() == [] and group.journal.oldest_view_seq() is None
    assert not (registry.config.scratch_dir / "test-1").exists()


def test_one_test_per_group_and_nothing_left_by_a_refused_one(
    tests: tuple[FailoverTests, list[str]], group: RecoveryGroup, stream: Stream,
) -> None:
    registry, _ = tests
    not_a_checkpoint = next(seq for seq in range(stream.last_seq, 0, -1)
                            if seq not in stream.by_seq)
    with pytest.raises(NotFound):
        registry.start("test-0", "g-1", str(not_a_checkpoint), scratch_max_bytes=None)
    assert registry.tests == {} and group.journal.oldest_view_seq() is None
    assert not (registry.config.scratch_dir / "test-0").exists()
    registry.start("test-1", "g-1", "latest", scratch_max_bytes=8192)
    with pytest.raises(Conflict, match="already has a failover test"):
        registry.start("test-2", "g-1", "latest", scratch_max_bytes=None)
    with pytest.raises(NotFound):
        registry.stop("test-2")
    registry.close_all()
    assert registry.tests == {} and group.journal.oldest_view_seq() is None


def test_a_full_scratch_refuses_writes_with_enospc(
    tests: tuple[FailoverTests, list[str]], stream: Stream,
) -> None:
    registry, _ = tests
    test = registry.start("test-1", "g-1", "latest", scratch_max_bytes=8192)
    image = next(i for i in test["images"] if i["volume"] == "disk0")
    backend = registry.backend(image["name"])
    assert backend is not None
    before = backend.read(0, 16384)
    backend.write(0, b"a" * 8192)
    with pytest.raises(OSError) as full:
        backend.write(8192, b"b" * 100)
    assert full.value.errno == errno.ENOSPC
    assert backend.read(0, 16384) == b"a" * 8192 + before[8192:]
    [status] = [i for i in registry.list_all()[0]["images"] if i["volume"] == "disk0"]
    assert status["scratch_alert"] and status["scratch_used_bytes"] == 8192
    registry.close_all()


def test_leftover_scratch_of_an_earlier_process_is_cleared(
    tests: tuple[FailoverTests, list[str]],
) -> None:
    registry, _ = tests
    leftover = registry.config.scratch_dir / "test-old" / "disk0.scratch"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"old")
    registry.clear_leftovers()
    assert not registry.config.scratch_dir.exists()
