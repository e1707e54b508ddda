"""Micro-benchmark of the two sans-IO cores' receive paths (no I/O, one process).

Usage: ``PYTHONPATH=src .venv/bin/python bench/sansio_receive.py [--rounds 7]``

- NBD: ``--writes`` 4 KiB NBD_CMD_WRITE requests, fed to an ``NbdServerConnection`` in
  transmission in 64 KiB chunks, every event taken with ``next_event``; then the same
  loop answering each request with ``send(SimpleReply)`` (the front end's hot path); then
  256 writes of 1 MiB, in 64 KiB chunks.
- Wire: ``--frames`` RECORDS frames of 1 MiB (256 records of 4 KiB, uncompressed) fed to
  a receiving ``WireConnection`` in 64 KiB and in 1 MiB chunks (the shipper's and the
  receiver's read sizes), every event taken with ``next_event`` (frame checks included).

Each figure is the best of ``--rounds`` in CPU time of this process (``process_time``: the
machine is shared, and time spent descheduled is not the core's; the minimum is the least
disturbed run), in requests or MiB per second of the core alone. Frames and requests are
built before the clock starts.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from seawall.nbd.client import NbdClientConnection
from seawall.nbd.constants import CMD_WRITE, REQUEST, REQUEST_MAGIC
from seawall.nbd.events import ExportInfo, SimpleReply
from seawall.nbd.events import NeedData as NbdNeedData
from seawall.nbd.server import NbdServerConnection
from seawall.wire.frames import Codec, Compressor
from seawall.wire.protocol import (
    Hello,
    NeedData,
    RecordsFrame,
    Role,
    VolumeSpec,
    Welcome,
    WireConnection,
)
from seawall.wire.records import Record, RecordKind

_BLOCK_BYTES = 4096


class _Catalog:
    def __init__(self, info: ExportInfo) -> None:
        self._info = info

    def lookup(self, name: str) -> ExportInfo | None:
        return self._info if name == self._info.name else None

    def names(self) -> list[str]:
        return [self._info.name]


def _nbd_server() -> NbdServerConnection:
    server = NbdServerConnection(_Catalog(ExportInfo("disk", 1 << 40, False)))
    client = NbdClientConnection()
    client.receive_data(server.initial_bytes())
    client.next_event()
    server.receive_data(client.send_client_flags() + client.send_export_name("disk"))
    server.next_event()  # ExportSelected
    return server


def _chunks(data: bytes, chunk_bytes: int) -> list[bytes]:
    return [data[at : at + chunk_bytes] for at in range(0, len(data), chunk_bytes)]


def nbd_writes(count: int, reply: bool, block_bytes: int = _BLOCK_BYTES) -> Callable[[], int]:
    payload = os.urandom(block_bytes)
    stream = b"".join(
        REQUEST.pack(REQUEST_MAGIC, 0, CMD_WRITE, cookie, cookie * block_bytes, block_bytes)
        + payload
        for cookie in range(count)
    )
    chunks = _chunks(stream, 64 * 1024)

    def run() -> int:
        server = _nbd_server()
        events = 0
        for chunk in chunks:
            server.receive_data(chunk)
            while not isinstance(event := server.next_event(), NbdNeedData):
                if reply:
                    server.send(SimpleReply(event.cookie))  # type: ignore[union-attr]
                events += 1
        assert events == count, events
        return events

    return run


def _wire_frames(count: int) -> list[bytes]:
    compressor = Compressor(Codec.NONE)
    payload = os.urandom(_BLOCK_BYTES)
    frames = []
    seq = 1
    for _ in range(count):
        records = [
            Record(s, 0, RecordKind.WRITE, 0, s * _BLOCK_BYTES, _BLOCK_BYTES, payload)
            for s in range(seq, seq + 256)
        ]
        seq += 256
        frames.append(RecordsFrame.build(records, compressor).frame)
    return frames


def wire_frames(frames: list[bytes], chunk_bytes: int) -> Callable[[], int]:
    chunks = _chunks(b"".join(frames), chunk_bytes)
    hello = Hello("g", "s", (VolumeSpec(0, "disk", 1 << 40),))

    def run() -> int:
        receiver = WireConnection(Role.RECEIVER)
        sender = WireConnection(Role.SENDER)
        receiver.receive_data(sender.send(hello))
        receiver.next_event()
        receiver.send(Welcome(0))
        received = 0
        for chunk in chunks:
            receiver.receive_data(chunk)
            while not isinstance(event := receiver.next_event(), NeedData):
                received += len(event.frame)  # type: ignore[union-attr]
        assert received == sum(len(f) for f in frames)
        return received

    return run


def _best_s(run: Callable[[], int], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--writes", type=int, default=50_000)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--only", choices=("nbd", "wire"))
    args = parser.parse_args()
    for reply in (False, True) if args.only != "wire" else ():
        seconds = _best_s(nbd_writes(args.writes, reply), args.rounds)
        label = "next_event + send(SimpleReply)" if reply else "next_event"
        print(f"nbd  4 KiB WRITE, 64 KiB chunks, {label}: "
              f"{args.writes / seconds / 1000:8.1f} k requests/s "
              f"({seconds / args.writes * 1e9:.0f} ns each)")
    if args.only != "wire":
        count = 256
        seconds = _best_s(nbd_writes(count, False, 1 << 20), args.rounds)
        print(f"nbd  1 MiB WRITE, 64 KiB chunks, next_event: {count / seconds:8.1f} MiB/s "
              f"({seconds / count * 1e6:.0f} us each)")
    if args.only == "nbd":
        return
    frames = _wire_frames(args.frames)
    total_mib = sum(len(f) for f in frames) / (1 << 20)
    for chunk_bytes in (64 * 1024, 1 << 20):
        seconds = _best_s(wire_frames(frames, chunk_bytes), args.rounds)
        print(f"wire 1 MiB RECORDS frames, {chunk_bytes >> 10} KiB chunks, next_event: "
              f"{total_mib / seconds:8.1f} MiB/s ({seconds / args.frames * 1e6:.0f} us per frame)")


if __name__ == "__main__":
    main()
