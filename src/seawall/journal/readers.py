"""ReadPool: positional reads of many files through a bounded set of open descriptors.

Rules and invariants:
- At most ``capacity`` descriptors stay open while idle; least recently used idle ones are
  closed first. A descriptor in use by a reader is never closed under it (reference count),
  so the pool may briefly exceed its capacity when every descriptor is busy.
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
        fd = self._acquire(key, path)
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
                self._handles[key][1] -= 1

    def _acquire(self, key: Hashable, path: Path) -> int:
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
            return handle[0]

    def close(self) -> None:
        with self._lock:
            for fd, _users in self._handles.values():
                os.close(fd)
            self._handles.clear()
