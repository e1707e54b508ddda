"""A small real filesystem that fills up: a tmpfs mounted for one test (needs root).

``mounted_tmpfs`` skips the test when mounting is not permitted (no root, no CAP_SYS_ADMIN,
or a sandbox without mount). ``fill`` takes all free space but ``leave_bytes`` with a
filler file; deleting the filler gives it back. ``mounted_ext2`` loop-mounts a small ext2
image with 1 KiB blocks, whose largest file is about 16 GiB (EFBIG past that).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def mounted_ext2(path: Path, image: Path, size_bytes: int) -> Iterator[Path]:
    """An ext2 file system of ``size_bytes`` (1 KiB blocks) in ``image``, mounted at ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    with open(image, "xb") as handle:
        handle.truncate(size_bytes)
    subprocess.run(["mkfs.ext2", "-q", "-F", "-b", "1024", str(image)], check=True,
                   capture_output=True)
    result = subprocess.run(["mount", "-o", "loop", str(image), str(path)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot loop-mount a file system here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(filler: Path, leave_bytes: int) -> None:
    """Grow ``filler`` until only about ``leave_bytes`` are free on its filesystem."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while (room := free_bytes(filler.parent) - leave_bytes) > 0:
            try:
                os.write(fd, bytes(min(room, 1 << 20)))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
