"""The one way Seawall replaces a small file durably: tmp -> fsync -> rename -> fsync dir.

Invariant: after ``atomic_write`` returns, a crash leaves either the old or the new content
at ``path``, never a mix, and the new content survives power loss.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, private: bool = False) -> None:
    """Replace ``path`` with ``data``; ``private`` files are readable by their owner only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    if private:
        os.fchmod(fd, 0o600)  # a stale tmp file keeps its old mode through O_CREAT
    with open(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def atomic_write_json(path: Path, value: Any, private: bool = False) -> None:
    atomic_write(path, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n", private)
