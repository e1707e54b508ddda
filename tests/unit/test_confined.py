"""Paths kept inside an admin's directory (``seawall.confined``), on the real file system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seawall.confined import create_file, inside, inside_any, open_directory
from seawall.errors import InvalidInput


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "clones"
    directory.mkdir()
    return directory


def test_names_relative_paths_and_absolute_ones_inside_are_taken(root: Path) -> None:
    assert inside(root, "monday", "--to") == root / "monday"
    assert inside(root, "app/monday", "--to") == root / "app" / "monday"
    assert inside(root, str(root / "x"), "--to") == root / "x"
    assert inside(root, ".", "--to") == root
    assert inside(root, "a/../b", "--to") == root / "b"  # stays inside: fine
    (root / "inner").symlink_to(root / "b")  # a symlink that stays inside
    assert inside(root, "inner", "--to") == root / "b"


@pytest.mark.parametrize("text", ["/etc", "/root/x", "..", "../x", "a/../../x", "/"])
def test_anything_resolving_outside_is_refused_naming_the_root(root: Path, text: str) -> None:
    with pytest.raises(InvalidInput, match=f"--to '{text}' is outside {root}"):
        inside(root, text, "--to")


def test_a_symlink_pointing_out_is_refused(root: Path, tmp_path: Path) -> None:
    (root / "out").symlink_to(tmp_path)
    (root / "etc").symlink_to("/etc")
    for text in ("out", "out/x", "etc", str(root / "etc" / "passwd")):
        with pytest.raises(InvalidInput, match="is outside"):
            inside(root, text, "--to")


def test_inside_any_takes_the_first_root_that_holds_it(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert inside_any([first, second], str(second / "j"), "storage") == second / "j"
    with pytest.raises(InvalidInput, match="must be an absolute path"):
        inside_any([first], "j", "storage")
    with pytest.raises(InvalidInput, match=r"outside the directories this site allows \("):
        inside_any([first, second], "/srv/j", "storage")


def test_the_writer_walks_without_following_a_symlink_swapped_in(
    root: Path, tmp_path: Path,
) -> None:
    """Checked, then swapped for a symlink out before the write: the walk refuses it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    assert inside(root, "monday/disks", "--to") == root / "monday" / "disks"
    (root / "monday").symlink_to(outside)  # after the check
    with pytest.raises(InvalidInput, match="monday is not a directory inside"):
        open_directory(root, Path("monday/disks"), create=True)
    assert list(outside.iterdir()) == []


def test_the_writer_makes_private_directories_and_new_files_only(root: Path,
                                                                  tmp_path: Path) -> None:
    fd = open_directory(root, Path("a/b"), create=True)
    try:
        assert (root / "a" / "b").is_dir()
        assert (root / "a").stat().st_mode & 0o777 == 0o700
        os.close(create_file(fd, "disk0.raw.part"))
        assert (root / "a" / "b" / "disk0.raw.part").stat().st_mode & 0o777 == 0o600
        with pytest.raises(FileExistsError):  # never over a file
            create_file(fd, "disk0.raw.part")
        (root / "a" / "b" / "link").symlink_to(tmp_path / "target")
        with pytest.raises(FileExistsError):  # never through a symlink (O_EXCL|O_NOFOLLOW)
            create_file(fd, "link")
        assert not (tmp_path / "target").exists()
        with pytest.raises(InvalidInput, match="is not a file name"):
            create_file(fd, "../x")
    finally:
        os.close(fd)
    with pytest.raises(InvalidInput, match="is not a path inside"):
        open_directory(root, Path("../x"), create=True)
    with pytest.raises(InvalidInput, match="nothing is not a directory inside"):
        open_directory(root, Path("nothing"), create=False)
