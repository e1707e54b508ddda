"""Unpacking a file-restore stream (tar) into the directory the user gave: safely, all or nothing.

Rules:
- The archive has one top entry, ``top`` (a file, directory or symlink name); it lands at
  ``to/top``, which must not exist (Conflict, checked before and again at the end).
- Members are written into a fresh staging directory inside ``to`` and the top entry is
  renamed into place only once the whole stream has arrived; any failure removes the
  staging directory, and the directories of ``to`` that the restore made, so ``to`` is
  left as it was.
- Interruptions are failures too: while unpacking, SIGINT, SIGTERM and SIGHUP raise
  ``Interrupted`` (SIGTERM and SIGHUP would otherwise end the process with no clean-up),
  and during the clean-up they are ignored, so a second Ctrl-C cannot cut it short and
  leave half of the staging directory behind. Signal handlers belong to the main thread:
  called from another thread, unpacking leaves them alone.
- No member may land outside ``to``: a name must be relative, under ``top``, with no
  ``.``, ``..``, empty or NUL component, and no directory on its way may be a symlink (a
  symlink from the archive is created as one — its target is text, never followed while
  writing). Files are opened with O_EXCL|O_NOFOLLOW. A breach is CorruptData: the
  manager sent what no file system holds.
- Kept: permission bits (setuid/setgid/sticky dropped), mtimes (to the microsecond:
  pax stores them as decimals). Owners are not (files belong to whoever runs the restore).
  Directory modes and mtimes are set after their contents, or writing into them would
  change or forbid them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from seawall.errors import Conflict, CorruptData, InvalidInput

CHUNK_BYTES = 1 << 20
PERMISSION_BITS = 0o777

Progress = Callable[[int], None]
"""Bytes of file content written so far."""

INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A signal stopped the restore (a BaseException: no ``except Exception`` takes it)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


@dataclass
class Unpacked:
    path: Path
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes: int = 0
    _directory_times: list[tuple[Path, int, int]] = field(default_factory=list)


class _ChunkReader:
    """A read(n) file object over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        size = len(self._buffer) if size < 0 else size
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


def target_of(to: Path, top: str) -> Path:
    """Where ``top`` will land; InvalidInput/Conflict before anything is fetched."""
    _check_component(top, top)
    if to.exists() and not to.is_dir():
        raise InvalidInput(f"--to {to} is not a directory")
    target = to / top
    if target.exists() or target.is_symlink():
        raise Conflict(f"{target} exists already: restore into another directory")
    return target


def unpack(chunks: Iterator[bytes], to: Path, top: str, progress: Progress) -> Unpacked:
    with _interrupts_go_to(_interrupt):
        target = target_of(to, top)
        made = [directory for directory in (to, *to.parents) if not directory.exists()]
        to.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".seawall-restore-", dir=to))
        result: Unpacked | None = None
        try:
            result = _unpack_into(staging, chunks, target, top, progress)
            return result
        finally:
            with _interrupts_go_to(signal.SIG_IGN):  # the clean-up runs to its end
                shutil.rmtree(staging, ignore_errors=True)
                for directory in made if result is None else ():  # innermost first
                    with contextlib.suppress(OSError):
                        directory.rmdir()


def _unpack_into(staging: Path, chunks: Iterator[bytes], target: Path, top: str,
                 progress: Progress) -> Unpacked:
    try:
        result = Unpacked(target)
        with tarfile.open(fileobj=_ChunkReader(chunks), mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                _extract(archive, member, staging, top, result, progress)
        if not (staging / top).is_symlink() and not (staging / top).exists():
            raise CorruptData(f"the restore stream held no {top}")
        for path, mode, mtime_ns in reversed(result._directory_times):
            os.chmod(path, mode)
            os.utime(path, ns=(mtime_ns, mtime_ns))
        if target.exists() or target.is_symlink():
            raise Conflict(f"{target} appeared while restoring: restore into another directory")
        os.rename(staging / top, target)
        return result
    except tarfile.TarError as exc:
        raise CorruptData(f"the restore stream is not a valid archive: {exc}") from None


def _interrupt(signal_number: int, _frame: object) -> None:
    raise Interrupted(signal_number)


@contextlib.contextmanager
def _interrupts_go_to(handler: Callable[[int, object], None] | signal.Handlers) -> Iterator[None]:
    """In here ``handler`` takes SIGINT, SIGTERM and SIGHUP (in the main thread only:
    Python runs signal handlers there; from another thread nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number in INTERRUPTS}
    try:
        yield
    finally:
        for number, former in previous.items():
            signal.signal(number, former)


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo, staging: Path, top: str,
             result: Unpacked, progress: Progress) -> None:
    parts = member.name.rstrip("/").split("/")
    for part in parts:
        _check_component(part, member.name)
    if parts[0] != top:
        raise CorruptData(f"refusing {member.name!r}: the restore holds only {top!r}")
    parent = staging
    for part in parts[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise CorruptData(f"refusing {member.name!r}: it goes through the symlink "
                              f"{'/'.join(parts[:parts.index(part) + 1])}, and would be "
                              "written outside the target")
        parent.mkdir(exist_ok=True)
    path = parent / parts[-1]
    mode = member.mode & PERMISSION_BITS
    mtime_ns = round(member.mtime * 1e9)
    if member.isdir():
        path.mkdir(mode=0o700)  # opened up to its mode once its content is written
        result.directories += 1
        result._directory_times.append((path, mode, mtime_ns))
    elif member.issym():
        os.symlink(member.linkname, path)
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        result.symlinks += 1
    elif member.isreg():
        _write_file(archive, member, path, result, progress)
        os.chmod(path, mode)
        os.utime(path, ns=(mtime_ns, mtime_ns))
        result.files += 1
    else:
        raise CorruptData(f"refusing {member.name!r}: not a file, directory or symlink")


def _write_file(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path,
                result: Unpacked, progress: Progress) -> None:
    source = archive.extractfile(member)
    if source is None:
        raise CorruptData(f"no content for {member.name!r}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        while data := source.read(CHUNK_BYTES):
            _write_all(fd, data)
            result.bytes += len(data)
            progress(result.bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _check_component(part: str, name: str) -> None:
    if part in ("", ".", "..") or "/" in part or "\x00" in part:
        raise CorruptData(f"refusing {name!r}: it would be written outside the target")
