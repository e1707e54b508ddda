"""ReadPool: positional reads of many files through a bounded set of open descriptors.

Rules and invariants:
- At most ``capacity`` descriptors stay open while idle; least recently used idle ones are
  closed first. A descriptor in use by a reader is never closed under it (reference count),
  so the pool may briefly exceed its capacity when every descriptor is busy.
- ``discard`` forgets a file (e.g. a deleted journal segment, whose space is freed only
  when its last descriptor closes): closed at once if idle, else when its last reader ends.
- Safe from any thread; the lock is held only to find or open a descriptor, never while
  reading, so slow reads do not serialise.
- ``readinto`` fills caller's buffers in one ``preadv`` (scatter: no copy in user space),
  or with ``nowait`` only if the page cache holds them all (``RWF_NOWAIT``); ``advise``
  asks the kernel to start reading ranges ahead (``POSIX_FADV_WILLNEED``: the reads are
  queued at the disk together, not one after another).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

from seawall.errors import CorruptData

DEFAULT_READ_POOL_CAPACITY = 64
IOV_MAX = os.sysconf("SC_IOV_MAX")
"""Most buffers one ``preadv`` may fill (1024 on Linux)."""


class ReadPool:
    def __init__(self, capacity: int = DEFAULT_READ_POOL_CAPACITY) -> None:
        self.capacity = capacity
        self._handles: OrderedDict[Hashable, list[int]] = OrderedDict()  # key -> [fd, users]
        self._lock = threading.Lock()

    def pread(self, key: Hashable, path: Path, length: int, position: int) -> bytes:
        """Exactly ``length`` bytes at ``position`` of ``path`` (CorruptData if it is short)."""
        handle = self._acquire(key, path)
        fd = handle[0]
        try:
            data = os.pread(fd, length, position)
            while len(data) < length:
                more = os.pread(fd, length - len(data), position + len(data))
                if not more:
                    raise CorruptData(f"{path} ends before byte {position + length}")
                data += more
            return data
        finally:
            self._release(key, handle)

    def readinto(
        self, key: Hashable, path: Path, buffers: Sequence[memoryview], position: int, *,
        nowait: bool = False,
    ) -> bool:
        """Fill ``buffers`` (at most ``IOV_MAX``) from ``position`` on, back to back
        (CorruptData if ``path`` ends first). ``nowait``: only from the page cache, in one
        go; False if that was not possible (the buffers then hold anything)."""
        handle = self._acquire(key, path)
        try:
            if nowait:
                try:
                    return os.preadv(handle[0], buffers, position, os.RWF_NOWAIT) == _total(
                        buffers
                    )
                except BlockingIOError:
                    return False
                except OSError as exc:
                    if exc.errno != errno.EOPNOTSUPP:  # a filesystem without RWF_NOWAIT
                        raise
                    return False
            todo = list(buffers)
            while todo:
                got = os.preadv(handle[0], todo, position)
                if got == 0:
                    raise CorruptData(f"{path} ends before byte {position + _total(todo)}")
                position += got
                while todo and got >= len(todo[0]):
                    got -= len(todo.pop(0))
                if got:
                    todo[0] = todo[0][got:]
            return True
        finally:
            self._release(key, handle)

    def advise(self, key: Hashable, path: Path, ranges: Iterable[tuple[int, int]]) -> None:
        """Start reading each (position, length) of ``path`` into the page cache, async."""
        handle = self._acquire(key, path)
        try:
            for position, length in ranges:
                os.posix_fadvise(handle[0], position, length, os.POSIX_FADV_WILLNEED)
        finally:
            self._release(key, handle)

    def _release(self, key: Hashable, handle: list[int]) -> None:
        with self._lock:
            handle[1] -= 1
            if handle[1] == 0 and self._handles.get(key) is not handle:
                os.close(handle[0])  # discarded while in use

    def discard(self, key: Hashable) -> None:
        """Close (now, or after its last reader) the descriptor of ``key``."""
        with self._lock:
            handle = self._handles.pop(key, None)
            if handle is not None and handle[1] == 0:
                os.close(handle[0])

    def _acquire(self, key: Hashable, path: Path) -> list[int]:
        with self._lock:
            handle = self._handles.get(key)
            if handle is None:
                handle = self._handles[key] = [os.open(path, os.O_RDONLY), 0]
            handle[1] += 1
            self._handles.move_to_end(key)
            excess = len(self._handles) - self.capacity
            for other_key, (fd, users) in list(self._handles.items()):
                if excess <= 0:
                    break
                if users == 0:
                    os.close(fd)
                    del self._handles[other_key]
                    excess -= 1
            return handle

    def close(self) -> None:
        with self._lock:
            for fd, _users in self._handles.values():
                os.close(fd)
            self._handles.clear()


def _total(buffers: Sequence[memoryview]) -> int:
    return sum(len(buffer) for buffer in buffers)
