"""File systems read with The Sleuth Kit (pytsk3) over a volume or partition, without mounting.

Rules:
- Read-only by construction: TSK only ever calls ``read`` on the source we hand it.
- Paths are POSIX, absolute inside the file system; ``normalize_path`` folds ``.``, ``..``
  and repeated slashes lexically (``..`` at the root stays at the root), so a PATH can
  name nothing outside the file system.
- Listings show allocated entries only: deleted names TSK still finds, ``.``/``..`` and
  TSK's virtual entries (``$OrphanFiles``, ``$FAT1``...) are left out.
- ``walk`` refuses (CorruptData) names no file system allows in a path component
  (``/``, NUL, ``.``, ``..``) and directory cycles: a damaged or crafted image can hold
  them, and a restore must never turn them into paths outside its target.
- Names are bytes on disk; they become ``str`` with ``surrogateescape`` (lossless).
- Errors: no such path -> NotFound; no file system TSK can read -> InvalidInput naming what
  the first blocks look like; TSK failing inside a readable one -> CorruptData.
- A read of the source that fails (an NBD export silent past its deadline, a broken
  connection) is the error raised, whatever TSK makes of it: TSK catches what its read
  callback raises and goes on probing (78 more reads to open a file system), so after the
  first failure every read fails at once with it, and it is raised when TSK returns.
"""

from __future__ import annotations

import posixpath
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytsk3

from seawall.errors import CorruptData, InvalidInput, NotFound, SeawallError

CHUNK_BYTES = 1 << 20
READABLE = "ext2/3/4, FAT12/16/32, exFAT, NTFS, HFS+, ISO 9660 and UFS"

FS_NAMES = {
    pytsk3.TSK_FS_TYPE_EXT2: "ext2", pytsk3.TSK_FS_TYPE_EXT3: "ext3",
    pytsk3.TSK_FS_TYPE_EXT4: "ext4", pytsk3.TSK_FS_TYPE_FAT12: "fat12",
    pytsk3.TSK_FS_TYPE_FAT16: "fat16", pytsk3.TSK_FS_TYPE_FAT32: "fat32",
    pytsk3.TSK_FS_TYPE_EXFAT: "exfat", pytsk3.TSK_FS_TYPE_NTFS: "ntfs",
    pytsk3.TSK_FS_TYPE_HFS: "hfs+", pytsk3.TSK_FS_TYPE_ISO9660: "iso9660",
    pytsk3.TSK_FS_TYPE_FFS1: "ufs1", pytsk3.TSK_FS_TYPE_FFS1B: "ufs1",
    pytsk3.TSK_FS_TYPE_FFS2: "ufs2",
}
KINDS = {
    pytsk3.TSK_FS_META_TYPE_REG: "file", pytsk3.TSK_FS_META_TYPE_DIR: "dir",
    pytsk3.TSK_FS_META_TYPE_LNK: "symlink", pytsk3.TSK_FS_META_TYPE_FIFO: "fifo",
    pytsk3.TSK_FS_META_TYPE_CHR: "char-device", pytsk3.TSK_FS_META_TYPE_BLK: "block-device",
    pytsk3.TSK_FS_META_TYPE_SOCK: "socket",
}
VIRTUAL = (pytsk3.TSK_FS_META_TYPE_VIRT, pytsk3.TSK_FS_META_TYPE_VIRT_DIR)
# What the first blocks of a volume look like, for a clear "cannot read" message.
SIGNATURES = ((0, b"XFSB", "an xfs file system"), (0x10040, b"_BHRfS_M", "a btrfs file system"),
              (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
              (512, b"LABELONE", "an LVM physical volume"),
              (4086, b"SWAPSPACE2", "Linux swap"), (4086, b"SWAP-SPACE", "Linux swap"))


class Source(Protocol):
    size_bytes: int

    def read(self, offset: int, length: int) -> bytes: ...


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # file, dir, symlink, fifo, char-device, block-device, socket, other
    size_bytes: int
    mode: int  # permission bits (0o7777)
    mtime_ns: int
    uid: int
    gid: int
    link_target: str | None
    inode: int

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.kind, "size_bytes": self.size_bytes,
                "mode": f"{self.mode:04o}", "mtime_ns": self.mtime_ns, "uid": self.uid,
                "gid": self.gid, "link_target": self.link_target}


def normalize_path(path: str) -> str:
    if "\x00" in path:
        raise InvalidInput("a path may not contain NUL")
    return posixpath.normpath("/" + path.lstrip("/"))


class _Image(pytsk3.Img_Info):  # type: ignore[misc]
    """TSK's view of our source: reads only, clamped at the end (TSK probes past it)."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self.failure: SeawallError | None = None  # the first read that failed
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def close(self) -> None:
        return None

    def read(self, offset: int, size: int) -> bytes:
        if self.failure is not None:
            raise self.failure
        length = max(0, min(size, self._source.size_bytes - offset))
        try:
            return self._source.read(offset, length) if length else b""
        except SeawallError as exc:
            self.failure = exc
            raise

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def get_size(self) -> int:
        return self._source.size_bytes


class FileSystem:
    def __init__(self, source: Source, where: str) -> None:
        """Open the file system on ``source``; ``where`` names it in messages."""
        self.where = where
        self._image = _Image(source)
        try:
            self._fs = pytsk3.FS_Info(self._image)
        except (OSError, RuntimeError):  # RuntimeError: what our read raised, wrapped
            self._image.raise_failure()
            raise InvalidInput(
                f"cannot read a file system on {where}: {_looks_like(source)}; "
                f"Seawall reads {READABLE} (see docs/file-restore.md)") from None
        self._image.raise_failure()
        ftype = int(self._fs.info.ftype)
        self.kind = FS_NAMES.get(ftype, f"tsk type {ftype:#x}")

    def entry(self, path: str) -> Entry:
        path = normalize_path(path)
        handle = self._open(path)
        name = posixpath.basename(path) or "/"
        entry = _entry(name, handle.info.meta)
        if entry is None:
            raise NotFound(f"no {path} in the file system of {self.where}")
        return entry

    def list(self, path: str) -> list[Entry]:
        """The entries of directory ``path`` sorted by name, or ``[entry]`` for a file."""
        entry = self.entry(path)
        if entry.kind != "dir":
            return [entry]
        return sorted(self._children(normalize_path(path), entry.inode), key=lambda e: e.name)

    def walk(self, path: str) -> Iterator[tuple[tuple[str, ...], Entry]]:
        """``path`` and everything under it, parents before children, as (relative parts,
        entry); the top is ``()``."""
        top = self.entry(path)
        yield (), top
        if top.kind == "dir":
            yield from self._walk(normalize_path(path), (), top, frozenset({top.inode}))

    def chunks(self, entry: Entry) -> Generator[bytes, None, None]:
        """The content of a file entry, in pieces of at most ``CHUNK_BYTES``."""
        handle = self._tsk(lambda: self._fs.open_meta(inode=entry.inode), entry.name)
        for offset in range(0, entry.size_bytes, CHUNK_BYTES):
            length = min(CHUNK_BYTES, entry.size_bytes - offset)
            data: bytes = self._tsk(lambda o=offset, n=length: handle.read_random(o, n),
                                    entry.name)
            if len(data) != length:
                raise CorruptData(f"{entry.name} on {self.where}: read {len(data)} bytes of "
                                  f"{length} at {offset}")
            yield data

    # --- internals ----------------------------------------------------------------------

    def _walk(self, path: str, parts: tuple[str, ...], directory: Entry,
              ancestors: frozenset[int]) -> Iterator[tuple[tuple[str, ...], Entry]]:
        for child in sorted(self._children(path, directory.inode), key=lambda e: e.name):
            if child.name in ("", ".", "..") or "/" in child.name or "\x00" in child.name:
                raise CorruptData(f"{path} on {self.where} holds an entry named "
                                  f"{child.name!r}, which no file system allows: the image is "
                                  "damaged or crafted; nothing restored")
            if child.kind == "dir" and child.inode in ancestors:
                raise CorruptData(f"{path}/{child.name} on {self.where} is its own ancestor "
                                  "(a directory cycle): the image is damaged")
            yield (*parts, child.name), child
            if child.kind == "dir":
                yield from self._walk(posixpath.join(path, child.name), (*parts, child.name),
                                      child, ancestors | {child.inode})

    def _children(self, path: str, inode: int) -> Iterator[Entry]:
        directory = self._tsk(lambda: self._fs.open_dir(inode=inode), path)
        try:
            for item in directory:
                name_info, meta = item.info.name, item.info.meta
                if not int(name_info.flags) & int(pytsk3.TSK_FS_NAME_FLAG_ALLOC):
                    continue  # a deleted name TSK still finds
                name = bytes(name_info.name).decode("utf-8", "surrogateescape")
                entry = _entry(name, meta)
                if entry is not None and name not in (".", ".."):
                    yield entry
        except (OSError, RuntimeError) as exc:
            self._image.raise_failure()
            raise CorruptData(f"cannot read {path} on {self.where}: {exc}") from None
        self._image.raise_failure()

    def _open(self, path: str) -> Any:
        try:
            handle = self._fs.open(path)
        except (OSError, RuntimeError) as exc:
            self._image.raise_failure()
            if "not found" in str(exc):
                raise NotFound(f"no {path} in the file system of {self.where}") from None
            raise CorruptData(f"cannot read {path} on {self.where}: {exc}") from None
        self._image.raise_failure()
        return handle

    def _tsk(self, call: Any, what: str) -> Any:
        try:
            result = call()
        except (OSError, RuntimeError) as exc:
            self._image.raise_failure()
            raise CorruptData(f"cannot read {what} on {self.where}: {exc}") from None
        self._image.raise_failure()  # a read failed, and TSK went on with what it had
        return result


def _entry(name: str, meta: Any) -> Entry | None:
    if meta is None or int(meta.type) in VIRTUAL:
        return None
    link = meta.link
    return Entry(
        name=name, kind=KINDS.get(int(meta.type), "other"), size_bytes=int(meta.size),
        mode=int(meta.mode) & 0o7777, mtime_ns=int(meta.mtime) * 10**9 + int(meta.mtime_nano),
        uid=int(meta.uid), gid=int(meta.gid),
        link_target=bytes(link).decode("utf-8", "surrogateescape") if link else None,
        inode=int(meta.addr),
    )


def _looks_like(source: Source) -> str:
    if source.size_bytes == 0:
        return "it is empty"
    for offset, magic, what in SIGNATURES:
        if offset + len(magic) <= source.size_bytes and source.read(offset, len(magic)) == magic:
            return f"it holds {what}"
    head = source.read(0, min(source.size_bytes, 1 << 20))
    if not any(head):
        return "its first MiB is all zeros (no file system made there)"
    return "no known file system found"
