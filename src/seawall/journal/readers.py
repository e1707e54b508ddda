"""ReadPool: positional reads of many files through a bounded set of open descriptors.

Rules and invariants:
- At most ``capacity`` descriptors stay open while idle; least recently used idle ones are
  closed first. A descriptor in use by a reader is never closed under it (reference count),
  so the pool may briefly exceed its capacity when every descriptor is busy.
- ``discard`` forgets a file (e.g. a deleted journal segment, whose space is freed only
  when its last descriptor closes): closed at once if idle, else when its last reader ends.
- Safe from any thread; the lock is held only to find or open a descriptor, never while
  reading, so slow reads do not serialise.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

from seawall.errors import CorruptData

DEFAULT_READ_POOL_CAPACITY = 64


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
            with self._lock:
                handle[1] -= 1
                if handle[1] == 0 and self._handles.get(key) is not handle:
                    os.close(fd)  # discarded while in use

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
