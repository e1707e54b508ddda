"""File systems read through the block cache (ext4 from mke2fs -d, FAT from mkfs.vfat +
mcopy), the tar stream, and the safe unpacker — on local image files, no sites."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.cli.unpack import unpack
from seawall.errors import Conflict, CorruptData, InvalidInput, NotFound
from seawall.manager.files.blocks import BLOCK_BYTES, CachedVolume, Window
from seawall.manager.files.filesystem import FileSystem, normalize_path
from seawall.manager.files.tarstream import TarItem, tar_stream

MIB = 1 << 20


def _volume(path: Path) -> CachedVolume:
    data = path.read_bytes()
    return CachedVolume(lambda offset, length: data[offset : offset + length], len(data))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "etc" / "app").mkdir(parents=True)
    (root / "etc" / "app" / "config.ini").write_text("key = value\n")
    (root / "etc" / "app" / "config.ini").chmod(0o640)
    os.utime(root / "etc" / "app" / "config.ini", ns=(1_600_000_000_000_000_000,) * 2)
    (root / "data.bin").write_bytes(os.urandom(3 * MIB + 123))
    (root / "empty").write_bytes(b"")
    os.symlink("/etc/passwd", root / "abs-link")
    os.symlink("etc/app", root / "rel-link")
    os.mkfifo(root / "fifo")
    return root


@pytest.fixture
def ext4(tmp_path: Path, tree: Path) -> Path:
    image = tmp_path / "ext4.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-I", "256", "-d", str(tree), str(image),
                    "32M"],
                   check=True, capture_output=True)
    return image


def test_ext4_listing_and_content(ext4: Path, tree: Path) -> None:
    volume = _volume(ext4)
    fs = FileSystem(volume, "volume disk0")
    assert fs.kind == "ext4"
    names = {e.name: e for e in fs.list("/")}
    assert set(names) == {"lost+found", "etc", "data.bin", "empty", "abs-link", "rel-link",
                          "fifo"}  # no ., .., $OrphanFiles
    assert names["etc"].kind == "dir" and names["fifo"].kind == "fifo"
    assert names["abs-link"].kind == "symlink" and names["abs-link"].link_target == "/etc/passwd"
    assert names["data.bin"].size_bytes == 3 * MIB + 123
    config = fs.entry("/etc/./app/../app//config.ini")
    assert (config.kind, config.mode, config.mtime_ns) == ("file", 0o640, 1_600_000_000_000_000_000)
    assert [e.name for e in fs.list("/etc/app/config.ini")] == ["config.ini"]
    data = names["data.bin"]
    assert b"".join(fs.chunks(data)) == (tree / "data.bin").read_bytes()
    assert volume.requests < 20 + (3 * MIB) // BLOCK_BYTES  # the cache serves metadata reads
    with pytest.raises(NotFound, match="no /etc/nope"):
        fs.list("/etc/nope")
    assert normalize_path("../../x/./y/..") == "/x"


def test_unreadable_file_systems_named(tmp_path: Path) -> None:
    zeros = CachedVolume(lambda offset, length: bytes(length), 8 * MIB)
    with pytest.raises(InvalidInput, match="all zeros"):
        FileSystem(zeros, "volume disk0")
    xfs = bytearray(8 * MIB)
    xfs[0:4] = b"XFSB"
    with pytest.raises(InvalidInput, match=r"xfs file system.*Seawall reads ext2/3/4"):
        FileSystem(CachedVolume(lambda o, n: bytes(xfs[o : o + n]), len(xfs)), "partition 1")


def test_fat_in_a_window(tmp_path: Path) -> None:
    fat = tmp_path / "fat.img"
    with open(fat, "wb") as file:
        file.truncate(16 * MIB)
    subprocess.run(["mkfs.vfat", str(fat)], check=True, capture_output=True)
    (tmp_path / "HELLO.TXT").write_bytes(b"hello from fat\n" * 1000)
    subprocess.run(["mcopy", "-i", str(fat), str(tmp_path / "HELLO.TXT"), "::/HELLO.TXT"],
                   check=True, capture_output=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    disk = bytes(MIB) + fat.read_bytes() + bytes(MIB)  # as if in a partition at 1 MiB
    volume = CachedVolume(lambda o, n: disk[o : o + n], len(disk))
    fs = FileSystem(Window(volume, MIB, 16 * MIB), "partition 1")
    assert fs.kind.startswith("fat")
    [hello] = [e for e in fs.list("/") if e.name == "HELLO.TXT"]
    assert b"".join(fs.chunks(hello)) == b"hello from fat\n" * 1000


def _archive(fs: FileSystem, path: str, top: str) -> Iterator[bytes]:
    items = [TarItem("/".join((top, *parts)), entry,
                     (lambda e=entry: fs.chunks(e)) if entry.kind == "file" else None)
             for parts, entry in fs.walk(path) if entry.kind in ("file", "dir", "symlink")]
    return tar_stream(items)


def test_round_trip_keeps_content_modes_mtimes_links(ext4: Path, tree: Path,
                                                     tmp_path: Path) -> None:
    fs = FileSystem(_volume(ext4), "volume disk0")
    to = tmp_path / "restore"
    done: list[int] = []
    result = unpack(_archive(fs, "/", "disk0"), to, "disk0", done.append)
    out = to / "disk0"
    assert result.path == out and result.bytes == done[-1] == 3 * MIB + 123 + 12
    assert (out / "data.bin").read_bytes() == (tree / "data.bin").read_bytes()
    config = (out / "etc" / "app" / "config.ini").stat()
    assert config.st_mode & 0o7777 == 0o640 and config.st_mtime_ns == 1_600_000_000_000_000_000
    assert os.readlink(out / "abs-link") == "/etc/passwd"
    assert (out / "rel-link" / "config.ini").read_text() == "key = value\n"
    assert not (out / "fifo").exists() and (out / "empty").read_bytes() == b""
    assert [p.name for p in to.iterdir()] == ["disk0"]  # no staging left behind

    with pytest.raises(Conflict, match="exists already"):
        unpack(_archive(fs, "/", "disk0"), to, "disk0", done.append)


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> Iterator[bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return iter([buffer.getvalue()])


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize("members", [
    [(_info("top", tarfile.DIRTYPE), b""), (_info("top/../../escaped"), b"x")],
    [(_info("top", tarfile.DIRTYPE), b""), (_info("OUTSIDE/escaped"), b"x")],
    [(_info("other"), b"x")],
    [(_info("top", tarfile.DIRTYPE), b""), (_info("top/link", tarfile.SYMTYPE, "OUTSIDE"), b""),
     (_info("top/link/escaped"), b"x")],
    [(_info("top", tarfile.DIRTYPE), b""), (_info("top/dev", tarfile.CHRTYPE), b"")],
])
def test_unpack_refuses_paths_escaping_the_target(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]],
) -> None:
    """OUTSIDE stands for an absolute directory outside the target."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for info, _ in members:
        info.name = info.name.replace("OUTSIDE", str(outside))
        info.linkname = info.linkname.replace("OUTSIDE", str(outside))
    to = tmp_path / "to"
    with pytest.raises(CorruptData, match="refusing"):
        unpack(_tar(*members), to, "top", lambda _: None)
    assert not to.exists()  # all or nothing: not even the --to it made
    assert not (tmp_path / "escaped").exists() and list(outside.iterdir()) == []


def test_unpack_of_a_cut_stream_leaves_nothing(tmp_path: Path) -> None:
    whole = b"".join(_tar((_info("top"), os.urandom(100_000))))
    to = tmp_path / "to"
    with pytest.raises(CorruptData, match="not a valid archive"):
        unpack(iter([whole[:50_000]]), to, "top", lambda _: None)
    assert not to.exists()
    to.mkdir()  # a --to that was there before stays
    with pytest.raises(CorruptData, match="not a valid archive"):
        unpack(iter([whole[:50_000]]), to, "top", lambda _: None)
    assert list(to.iterdir()) == []
