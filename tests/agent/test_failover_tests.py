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
    return recovered(tmp_path / "group", "g-1", "disk", stream)


def recovered(root: Path, group_id: str, prefix: str, stream: Stream) -> RecoveryGroup:
    """A recovery group of group ``app`` (or one member journal of it) holding ``stream``,
    its volumes named ``PREFIX<index>``."""
    volumes = [GroupVolume(index=v, name=f"{prefix}{v}", size_bytes=n)
               for v, n in VOLUME_SIZES.items()]
    (root / "replicas").mkdir(parents=True)
    for volume, data in stream.replicas.items():
        (root / "replicas" / f"{prefix}{volume}.raw").write_bytes(data)
    group = RecoveryGroup(RecoverySpec(group_id=group_id, name="app", source_site="prod",
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


def test_a_group_spanning_agents_is_tested_from_each_member_journal_at_its_marker(
    tmp_path: Path, group: RecoveryGroup, stream: Stream,
) -> None:
    """Member journals ``g-1`` (the lead, disk*) and ``m-2`` (log*): each image reads its
    own journal at its own marker, a second test of either member is refused, and a part
    that cannot be made leaves nothing of the others."""
    other_stream = make_stream(6, record_count=300, volume_sizes=VOLUME_SIZES)
    other = recovered(tmp_path / "member-2", "m-2", "log", other_stream)
    groups = {"g-1": group, "m-2": other}
    config = SiteConfig.create("dr", tmp_path / "site", "127.0.0.1:1", "127.0.0.1:2")
    registry = FailoverTests(config, lambda group_id: groups[group_id], lambda _: 0)
    lead, member = checkpoint(stream, 1), checkpoint(other_stream, -2)
    assert lead.seq != member.seq  # each journal's own marker, not the group's id

    not_a_marker = next(seq for seq in range(other_stream.last_seq, 0, -1)
                        if seq not in other_stream.by_seq)
    with pytest.raises(NotFound):  # the member's marker is not a checkpoint of its journal
        registry.start("test-0", "app-id", str(lead.seq), None,
                       {"g-1": str(lead.seq), "m-2": str(not_a_marker)})
    assert registry.tests == {} and group.journal.oldest_view_seq() is None
    assert not (config.scratch_dir / "test-0").exists()

    test = registry.start("test-1", "app-id", str(lead.seq), None,
                          {"g-1": str(lead.seq), "m-2": str(member.seq)})
    assert (test["group_id"], test["group"], test["checkpoint"]["id"]) == (
        "app-id", "app", lead.seq)
    images = {image["volume"]: registry.backend(image["name"]) for image in test["images"]}
    assert sorted(images) == ["disk0", "disk7", "log0", "log7"]
    for prefix, expected in (("disk", lead), ("log", member)):
        for volume, image in expected.images.items():
            backend = images[f"{prefix}{volume}"]
            assert backend is not None and backend.read(0, len(image)) == image
    assert registry.running_on(group) and registry.running_on(other)
    with pytest.raises(Conflict, match="already has a failover test"):
        registry.start("test-2", "m-2", "latest", None)
    registry.stop("test-1")
    assert not registry.running_on(other) and other.journal.oldest_view_seq() is None
