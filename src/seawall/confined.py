"""Paths a user names at a site, kept inside the directories the site's admin chose.

A user (an operator cloning, the protected site naming a script or a journal location)
names a path; the site writes or runs there as its own user, often root. So a path is
taken only inside a directory the site's admin configured (``site init --clone-dir``,
``--scripts-dir``, ``--storage-root``), whatever the caller's role.

Rules:
- ``inside(root, text)``: ``text`` is relative to ``root`` (a name or a relative path) or
  absolute; it is resolved with the real file system (``..`` collapsed, every symlink
  followed), and refused (``InvalidInput`` naming the root) unless the result is ``root``
  itself or under it. A symlink inside the root that points out is refused like ``..``.
- The place that writes checks again: ``open_directory`` walks from the root one
  component at a time (``openat`` with ``O_NOFOLLOW``), making the missing ones 0700, so
  a symlink swapped in after the first check cannot lead out; ``create_file`` makes a new
  file in that directory with ``O_EXCL | O_NOFOLLOW`` (never through a symlink, never
  over an existing file).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from seawall.errors import InvalidInput

DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def inside(root: Path, text: str, what: str) -> Path:
    """``text`` (relative to ``root``, or absolute) resolved; refused unless under ``root``."""
    base = root.resolve()
    if "\0" in text:
        raise InvalidInput(f"{what} {text!r} holds a NUL character")
    resolved = (base / text).resolve()  # an absolute text replaces the base
    if not resolved.is_relative_to(base):
        raise InvalidInput(f"{what} {text!r} is outside {base}: give a path inside it "
                           "(relative to it, or absolute under it)")
    return resolved


def inside_any(roots: Iterable[Path], text: str, what: str) -> Path:
    """``text`` (an absolute path) resolved; refused unless under one of ``roots``."""
    allowed = [root.resolve() for root in roots]
    if not text.startswith("/"):
        raise InvalidInput(f"{what} {text!r} must be an absolute path at the recovery site")
    for root in allowed:
        try:
            return inside(root, text, what)
        except InvalidInput:
            continue
    raise InvalidInput(f"{what} {text!r} is outside the directories this site allows "
                       f"({', '.join(map(str, allowed))}; `site init --storage-root` adds "
                       "one)")


def open_directory(root: Path, relative: Path, create: bool) -> int:
    """A descriptor of ``root/relative``, walked without following any symlink below
    ``root``; missing directories are made (0700) when ``create``. The caller closes it."""
    if relative.is_absolute() or ".." in relative.parts:
        raise InvalidInput(f"{relative} is not a path inside {root}")
    fd = os.open(root.resolve(), DIRECTORY_FLAGS)
    try:
        for part in relative.parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            try:
                child = os.open(part, DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise InvalidInput(f"{root / relative}: {part} is not a directory inside "
                                   f"{root} ({exc.strerror})") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_file(directory_fd: int, name: str, mode: int = 0o600) -> int:
    """A new file ``name`` in the directory, open for writing; never through a symlink."""
    if "/" in name or name in ("", ".", ".."):
        raise InvalidInput(f"{name!r} is not a file name")
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   mode, dir_fd=directory_fd)
