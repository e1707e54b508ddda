"""What the other users of a host can reach of a site or an agent: nothing, but the NBD
socket for the one group an operator names.

Threat model: docs/security.md (actor "local user"). Rules and invariants:
- Every service process (``site init``, ``site run``, ``manager run``, ``agent run``) runs
  under umask 077 (``enter_private_umask``): every file and directory it makes is
  0600/0700 whatever its caller's umask was.
- On every start, ``secure_data_dir`` closes the data directory and its direct children
  (0700 directories, 0600 files), so a site made by an older version or a directory the
  operator made 0755 beforehand is closed too; deeper entries are behind those.
- With a socket group (``site init --socket-group``: e.g. QEMU's, for the VMs' mirrors), the
  members of that group, and only they, may traverse the data directory and ``run/`` (0710:
  no listing) and connect to the NBD socket (0660); everything else stays 0600/0700.
- A Unix socket is bound with its final mode already in force (umask around ``bind``), so
  there is no instant at which another user could connect to it.
- The agent's control socket is 0600, and its server closes every connection whose peer
  (SO_PEERCRED) is neither root nor the agent's own user (``PeerChecked``): a socket file
  opened up by mistake still lets no one else in.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seawall.errors import InvalidInput

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
GROUP_TRAVERSE_MODE = 0o710  # the group may pass through, not list
GROUP_SOCKET_MODE = 0o660
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def enter_private_umask() -> None:
    """Make every later file and directory of this process private to its user."""
    os.umask(PRIVATE_UMASK)


def group_id(name: str) -> int:
    """The id of group ``name``; InvalidInput when the host has no such group."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise InvalidInput(f"no group {name!r} on this host (--socket-group)") from None


def secure_data_dir(data_dir: Path, run_dir: Path, socket_group: str | None) -> None:
    """Close ``data_dir`` and its direct children to other users (see the module rules)."""
    gid = group_id(socket_group) if socket_group else None
    _set_mode(data_dir, PRIVATE_DIR_MODE if gid is None else GROUP_TRAVERSE_MODE, gid)
    for entry in data_dir.iterdir():
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue  # a link's target is not ours to change
        if entry == run_dir and gid is not None:
            _set_mode(entry, GROUP_TRAVERSE_MODE, gid)
        elif stat.S_ISDIR(info.st_mode):
            _set_mode(entry, PRIVATE_DIR_MODE, None)
        elif not stat.S_ISSOCK(info.st_mode):
            _set_mode(entry, PRIVATE_FILE_MODE, None)


def _set_mode(path: Path, mode: int, gid: int | None) -> None:
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, mode)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def bind_unix(path: Path, group: str | None = None) -> socket.socket:
    """A listening-ready Unix socket at ``path``: 0600, or 0660 for ``group``.

    A stale socket left by an earlier run is replaced; any other file there is an error."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise InvalidInput(f"{path} exists and is not a socket: not replaced")
        path.unlink()
    gid = group_id(group) if group else None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _umask(0o177):  # 0600 from the start: no window with a wider mode
            sock.bind(str(path))
        if gid is not None:
            _set_mode(path, GROUP_SOCKET_MODE, gid)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {path}: {exc.strerror}") from None
    return sock


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a connected Unix socket."""
    _pid, uid, _gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return int(uid)


def trusted_uid(uid: int) -> bool:
    """Root, or the user this service runs as."""
    return uid in (0, os.geteuid())


def peer_checked(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """``protocol`` (a uvicorn HTTP protocol) that first closes untrusted Unix peers."""

    class PeerChecked(protocol):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family == socket.AF_UNIX:
                uid = peer_uid(sock)
                if not trusted_uid(uid):
                    log.warning("control socket: refused a connection from uid %d", uid)
                    transport.close()

    return PeerChecked
