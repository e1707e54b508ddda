"""A tar (POSIX pax) stream of file-system entries, built piece by piece: pure code.

Rules:
- ``tar_stream`` yields bytes as it goes: a header, then the file's content as its
  ``content`` iterator gives it, then padding to 512 bytes. Nothing holds more than one
  chunk of a file, so a file of any size streams in bounded memory (``tarfile.addfile``
  would buffer whole members when writing to a stream, hence the headers by hand).
- Regular files, directories and symlinks only (the kinds a restore recreates); other
  kinds are the caller's to skip. Modes, owners and mtimes (with nanoseconds, as pax
  records) are carried; names too long for ustar go in pax headers.
- A file whose content does not add up to its size raises ``CorruptData``, which leaves
  the stream without its end-of-archive blocks: a reader sees it cut short, never a
  silently wrong file.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

from seawall.errors import CorruptData
from seawall.manager.files.filesystem import Entry

BLOCK = tarfile.BLOCKSIZE
TAR_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}


@dataclass(frozen=True)
class TarItem:
    path: str  # the member's name in the archive, relative
    entry: Entry
    content: Callable[[], Iterator[bytes]] | None = None  # regular files


def tar_stream(items: Iterable[TarItem]) -> Generator[bytes, None, None]:
    for item in items:
        yield header(item.path, item.entry)
        if item.entry.kind != "file":
            continue
        sent = 0
        for chunk in item.content() if item.content else ():
            sent += len(chunk)
            if sent > item.entry.size_bytes:
                break
            yield chunk
        if sent != item.entry.size_bytes:
            raise CorruptData(f"{item.path}: content is {sent} bytes, its size says "
                              f"{item.entry.size_bytes}; the archive was cut short")
        if sent % BLOCK:
            yield bytes(BLOCK - sent % BLOCK)
    yield bytes(2 * BLOCK)  # end of archive


def header(path: str, entry: Entry) -> bytes:
    info = tarfile.TarInfo(path + "/" if entry.kind == "dir" else path)
    info.type = TAR_TYPES[entry.kind]
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    whole_s, ns = divmod(entry.mtime_ns, 10**9)
    info.mtime = whole_s + ns / 1e9 if ns else whole_s
    info.size = entry.size_bytes if entry.kind == "file" else 0
    info.linkname = (entry.link_target or "") if entry.kind == "symlink" else ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
