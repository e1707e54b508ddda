"""Reading a running VM's disk through its own QEMU: a read-only NBD export of the disk node.

A resync compares the disk of a running VM with the recovery site; the disk is read where
QEMU serves it, never from the image file behind QEMU's back (a qcow2 being written cannot
be read safely from outside, and a raw file read there could miss writes QEMU holds).

Rules and invariants:
- QEMU serves the export: ``nbd-server-start`` on a Unix socket, then ``block-export-add``
  (``type: nbd``, ``writable: false``) of the drive's top node. Reads see exactly what the
  guest sees, the format layer included. The write-blocking mirror's filter sits above
  that node and shares consistent reads, so the export runs beside the mirror (checked on
  QEMU 7.2: the mirror stays ready, the export reads the guest-visible disk).
- QEMU runs one NBD server at most. Ours listens on ``socket_dir/qemu-<vm>.nbd``. If one
  runs already it is reused when it is ours (a killed agent left it: our socket file is
  there); one we did not start (libvirt's or Proxmox's, for a migration or a backup) does
  not tell its address over QMP: ``Conflict`` naming the VM, retried on the next sync.
- The export is ``seawall-read-D`` (D the disk); a leftover of that name (a killed agent's)
  is removed first. ``close_export`` removes it (``mode: hard``: our reader is gone, any
  other client of it is ours too) and stops the server once it serves no export at all.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from seawall.errors import Conflict, PeerError

Run = Callable[[str, dict[str, Any] | None], Awaitable[Any]]


def export_name(disk: str) -> str:
    return "seawall-read-" + re.sub(r"[^A-Za-z0-9_.-]", "_", disk)


def server_socket(socket_dir: Path, vm_uuid: str) -> Path:
    return socket_dir / f"qemu-{vm_uuid[:13]}.nbd"  # short: Unix socket paths max 107 bytes


async def open_export(run: Run, vm_name: str, vm_uuid: str, disk: str, node: str,
                      socket_dir: Path) -> tuple[Path, str]:
    """Export ``node`` (disk ``disk``) read-only on our NBD server in QEMU; its address."""
    path = server_socket(socket_dir, vm_uuid)
    try:
        await run("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(path)}}})
    except PeerError as exc:
        if "already running" not in exc.message:
            raise
        if not path.exists():
            raise Conflict(f"VM {vm_name}: QEMU runs an NBD server Seawall did not start "
                           f"(a migration or backup?): disk {disk} cannot be read for a "
                           "resync until it ends") from None
    name = export_name(disk)
    exports = await run("query-block-exports", None)
    if any(e.get("id") == name for e in exports):
        await run("block-export-del", {"id": name, "mode": "hard"})
        await _wait_gone(run, name)
    await run("block-export-add", {"type": "nbd", "id": name, "node-name": node,
                                   "name": name, "writable": False})
    return path, name


async def close_export(run: Run, disk: str, socket_path: Path | None) -> None:
    """Remove the export; stop the server (and remove its socket file, so that a socket
    there always means a server of ours) once it serves nothing."""
    name = export_name(disk)
    exports = await run("query-block-exports", None)
    if any(e.get("id") == name for e in exports):
        await run("block-export-del", {"id": name, "mode": "hard"})
        await _wait_gone(run, name)
    if not await run("query-block-exports", None):  # the server serves nobody else's
        try:
            await run("nbd-server-stop", None)
        except PeerError as exc:
            if "not running" not in exc.message:
                raise
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)


async def _wait_gone(run: Run, name: str) -> None:
    """``block-export-del`` returns before the export is gone (its clients close first)."""
    for _ in range(200):
        if not any(e.get("id") == name for e in await run("query-block-exports", None)):
            return
        await asyncio.sleep(0.01)
    raise PeerError(f"export {name} still exists 2 s after block-export-del")
