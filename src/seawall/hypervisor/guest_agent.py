"""A minimal client of qemu-guest-agent's own socket, for VMs reached through QMP.

qemu.qmp does not speak the guest agent's protocol (no greeting, no capabilities
handshake, no events), so this is a small JSON-lines client of its own. libvirt VMs never
use it: libvirt owns their agent channel and is asked through ``fsFreeze``/``fsThaw``.

Where the socket is: next to the VM's QMP socket, with the same stem and ``.qga``
(Proxmox VE: ``/var/run/qemu-server/ID.qga``; plain QEMU started with
``-chardev socket,path=DIR/NAME.qga,server=on,wait=off,id=qga0 -device virtio-serial
-device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0``).

Rules and invariants:
- One connection per call, closed after it: the guest agent serves one client at a time
  and keeps no session, so a call never depends on an earlier one's state.
- Every exchange starts with a 0xFF byte (the agent drops any half-parsed input) and
  ``guest-sync-delimited`` with a fresh id: the agent answers 0xFF then ``{"return": id}``,
  so a stale answer left in the channel by an earlier, timed-out client is skipped.
- The whole exchange (connect, sync, command) is bounded by ``timeout_s``; a socket
  missing, refused, silent or closed is "no guest agent" (``None``), never an error: the
  caller takes a crash-consistent checkpoint then. An agent that answers with an error
  raises ``PeerError`` naming the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from pathlib import Path
from typing import Any

from seawall.errors import PeerError

SYNC_BYTE = b"\xff"
MAX_LINE_BYTES = 64 * 1024


def qga_socket_for(qmp_socket: Path) -> Path:
    """The guest agent's socket of the VM whose QMP socket is ``qmp_socket``."""
    return qmp_socket.with_suffix(".qga")


class _Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, command: str, arguments: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        self.writer.write(json.dumps(message).encode() + b"\n")
        await self.writer.drain()

    async def line(self) -> bytes:
        line = await self.reader.readuntil(b"\n")
        if len(line) > MAX_LINE_BYTES:
            raise PeerError("guest agent: an answer longer than 64 KiB")
        return line

    async def answer(self) -> dict[str, Any]:
        line = await self.line()
        try:
            answer = json.loads(line)
        except ValueError:
            raise PeerError(f"guest agent: not JSON: {line[:80]!r}") from None
        if not isinstance(answer, dict):
            raise PeerError(f"guest agent: not an object: {line[:80]!r}")
        return answer

    async def sync(self) -> None:
        self.writer.write(SYNC_BYTE)
        sync_id = secrets.randbelow(2**31)
        await self.send("guest-sync-delimited", {"id": sync_id})
        await self.reader.readuntil(SYNC_BYTE)  # anything before the delimiter is stale
        while True:
            # Stale lines may come first: an earlier client's answers, or the delimited
            # answer of an earlier sync (its 0xFF the one just read, ours still ahead).
            line = (await self.line()).lstrip(SYNC_BYTE)
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if isinstance(answer, dict) and answer.get("return") == sync_id:
                return

    async def run(self, command: str) -> Any:
        await self.send(command)
        answer = await self.answer()
        if "error" in answer:
            error = answer["error"]
            detail = error.get("desc", error) if isinstance(error, dict) else error
            raise PeerError(f"guest agent: {command} failed: {detail}")
        return answer.get("return")


async def guest_command(socket_path: Path, command: str, timeout_s: float) -> Any | None:
    """``command``'s answer from the guest agent at ``socket_path``; None if no agent
    answers within ``timeout_s`` (PeerError if it answers with an error)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(str(socket_path),
                                                                limit=MAX_LINE_BYTES * 2)
            channel = _Channel(reader, writer)
            await channel.sync()
            return await channel.run(command)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def freeze(socket_path: Path, timeout_s: float) -> int | None:
    """Freeze the guest's file systems: how many; None if no guest agent answered."""
    frozen = await guest_command(socket_path, "guest-fsfreeze-freeze", timeout_s)
    return None if frozen is None else int(frozen)


async def thaw(socket_path: Path, timeout_s: float) -> int | None:
    """Thaw them: how many; None if no guest agent answered."""
    thawed = await guest_command(socket_path, "guest-fsfreeze-thaw", timeout_s)
    return None if thawed is None else int(thawed)
