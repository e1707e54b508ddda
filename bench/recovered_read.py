"""Sequential read of a recovered image (journal of random writes) against qemu-nbd on a file.

Usage: ``.venv/bin/python bench/recovered_read.py [--size 2G] [--journal 1G] [--bs 4k]
[--frame-records 256] [--codec none] [--rounds 5]`` (root: it drops the page cache).

What runs, in one invocation, on this machine:

- **Build.** A replica file of ``--size`` bytes of incompressible data (AES-CTR keystream)
  and a journal over it, written through ``Journal.append_frame`` exactly as the receiver
  stores what the shipper sends: one frame with SYNC_BEGIN/SYNC_END, then ``--journal``
  bytes of WRITE records of ``--bs`` at random aligned offsets over the whole volume (fresh
  random data each), ``--frame-records`` records per frame (256 x 4 KiB = the shipper's
  1 MiB frame limit), with ``--codec`` (incompressible data is stored raw whatever the
  codec; ``--compressible`` makes payloads half zeros so ``lz4``/``zstd`` frames really
  are compressed), then a CHECKPOINT record; synced.
- **Serve.** A child process (this script, ``serve``) opens the journal, a point-in-time
  view at that checkpoint and the agent's own export backend (``PointInTimeBackend``) and
  NBD front end (``NbdFrontend``) on a Unix socket, on uvloop like the agent. Beside it
  ``qemu-nbd -r -f raw -t -e 8`` serves the replica file (a file of the same size on the
  same disk) on another socket.
- **Read.** ``--rounds`` times, in alternating order, page cache dropped before each:
  ``nbdcopy URI null:`` of the image and of the qemu-nbd export (same tool, same default
  options: both servers advertise multi-conn, so nbdcopy opens 4 connections to each).
  Ratio = image MB/s / qemu-nbd MB/s, medians. With ``--verify``, the image is also
  compared once, byte for byte, against the model the build wrote (an ``nbdcopy`` of it to
  a file, against the replica with the writes laid over it).

Results: a table on stderr and a JSON document in ``bench/results/``. ``--keep DIR`` builds
into DIR (or reuses the build found there), so rounds can be repeated on one journal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import spawn, wait_for_socket
from delta_sync import make_source
from nbd_writes import machine
from seawall.units import parse_size_bytes
from seawall.wire.frames import (
    FRAME_HEADER,
    Codec,
    Compressor,
    RecordsDirectory,
    encode_records,
    read_directory,
)
from seawall.wire.records import Record, RecordKind, checkpoint_record, write_record
from sitepair import RESULTS_DIR, CpuMeter, drop_caches, load_average, progress

VOLUME = 0
EXPORT = "image"
BUILD_FILE = "build.json"


def _frame(records: list[Record], compressor: Compressor) -> tuple[bytes, RecordsDirectory]:
    frame = encode_records(records, compressor)
    return frame, read_directory(memoryview(frame)[FRAME_HEADER.size :])


def build(directory: Path, size_bytes: int, journal_bytes: int, block_bytes: int,
          frame_records: int, codec: Codec, compressible: bool, seed: int) -> dict[str, Any]:
    """Replica + journal in ``directory``; what was built (also written to build.json)."""
    from seawall.journal import Journal

    directory.mkdir(parents=True, exist_ok=True)
    replica = directory / "replica.raw"
    progress(f"build: {size_bytes / 2**30:g} GiB replica of random data")
    make_source(replica, size_bytes, seed=seed)
    journal = Journal.open(directory / "journal", {VOLUME: size_bytes}, {VOLUME: replica})
    rnd = random.Random(seed)
    compressor = Compressor(codec)
    seq, now_ns = 1, time.time_ns()
    journal.append_frame(*_frame([Record(1, now_ns, RecordKind.SYNC_BEGIN),
                                  Record(2, now_ns, RecordKind.SYNC_END)], compressor))
    seq = 3
    blocks = size_bytes // block_bytes
    count = journal_bytes // block_bytes
    progress(f"build: {count} writes of {block_bytes} bytes, {frame_records} per frame, "
             f"{codec.name}{' (compressible)' if compressible else ''}")
    written = 0
    while written < count:
        batch = []
        for _ in range(min(frame_records, count - written)):
            data = os.urandom(block_bytes)
            if compressible:
                data = data[: block_bytes // 2] + bytes(block_bytes - block_bytes // 2)
            batch.append(write_record(seq, time.time_ns(), VOLUME,
                                      rnd.randrange(blocks) * block_bytes, data))
            seq += 1
        journal.append_frame(*_frame(batch, compressor))
        written += len(batch)
    journal.append_frame(*_frame([checkpoint_record(seq, time.time_ns(), "bench")], compressor))
    journal.sync()
    stats = journal.stats()
    journal.close()
    built = {"size_bytes": size_bytes, "journal_bytes": journal_bytes,
             "block_bytes": block_bytes, "frame_records": frame_records, "codec": codec.name,
             "compressible": compressible, "seed": seed, "checkpoint_seq": seq,
             "records": stats.record_count, "journal_bytes_on_disk": stats.bytes_on_disk,
             "segments": stats.segment_count}
    (directory / BUILD_FILE).write_text(json.dumps(built, indent=2) + "\n")
    return built


def serve(directory: Path, socket_path: Path) -> None:
    """The recovery agent's read path for the built journal, until SIGTERM."""
    import uvloop

    from seawall.agent.frontend.backend import ExportBackend
    from seawall.agent.frontend.server import NbdFrontend
    from seawall.agent.images.exports import PointInTimeBackend
    from seawall.journal import Journal

    built = json.loads((directory / BUILD_FILE).read_text())
    journal = Journal.open(directory / "journal", {VOLUME: built["size_bytes"]},
                           {VOLUME: directory / "replica.raw"})
    view = journal.view(VOLUME, built["checkpoint_seq"])
    backend = PointInTimeBackend(EXPORT, view)

    class Catalog:
        def backend(self, name: str) -> ExportBackend | None:
            return backend if name == EXPORT else None

        def names(self) -> list[str]:
            return [EXPORT]

    async def run() -> None:
        frontend = NbdFrontend(Catalog())
        await frontend.start_unix(socket_path)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await frontend.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    view.close()
    journal.close()


def nbdcopy_s(uri: str) -> float:
    started = time.monotonic()
    subprocess.run(["nbdcopy", uri, "null:"], check=True, capture_output=True, timeout=3600)
    return time.monotonic() - started


def verify(directory: Path, built: dict[str, Any], uri: str) -> bool:
    """The image equals the replica with every journaled write laid over it, in seq order,
    as decoded here straight from the segment files (not through the journal's read path)."""
    from seawall.journal.segment_format import SEGMENT_HEADER
    from seawall.wire.frames import decode_records, parse_header

    progress("verify: copying the image and rebuilding the expected one")
    copy = directory / "image-copy.raw"
    subprocess.run(["nbdcopy", uri, str(copy)], check=True, capture_output=True, timeout=3600)
    expected = bytearray((directory / "replica.raw").read_bytes())
    for segment in sorted((directory / "journal").glob("seg-*.swj")):
        data = memoryview(segment.read_bytes())
        position = SEGMENT_HEADER.size
        while position < len(data):
            header = parse_header(data, position)
            body = data[position + FRAME_HEADER.size : position + header.frame_length]
            for record in decode_records(header, body):
                if record.kind == RecordKind.WRITE and record.volume == VOLUME:
                    expected[record.offset : record.offset + record.length] = record.payload
            position += header.frame_length
    same = copy.read_bytes() == expected
    copy.unlink()
    return same


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        serve(Path(argv[1]), Path(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", default="2G", help="volume (and reference file) size")
    parser.add_argument("--journal", default="1G", help="bytes of random writes journaled")
    parser.add_argument("--bs", default="4k", help="size of each journaled write")
    parser.add_argument("--frame-records", type=int, default=256)
    parser.add_argument("--codec", default="none", choices=[c.name.lower() for c in Codec])
    parser.add_argument("--compressible", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--keep", type=Path, help="build into (or reuse) this directory")
    args = parser.parse_args(argv)
    for tool in ("nbdcopy", "qemu-nbd", "openssl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make setup installs it)", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("needs root (drops the page cache)", file=sys.stderr)
        return 2
    started_at = time.strftime("%Y%m%d-%H%M%S")
    directory = args.keep or Path(os.environ.get("SEAWALL_BENCH_DIR", "/var/tmp")) / (
        f"seawall-recread-{started_at}")
    if (directory / BUILD_FILE).exists():
        built = json.loads((directory / BUILD_FILE).read_text())
        progress(f"reusing the build in {directory}")
    else:
        built = build(directory, parse_size_bytes(args.size), parse_size_bytes(args.journal),
                      parse_size_bytes(args.bs), args.frame_records, Codec[args.codec.upper()],
                      args.compressible, args.seed)
    log = directory / "servers.log"
    image_socket, qemu_socket = directory / "image.sock", directory / "qemu.sock"
    for stale in (image_socket, qemu_socket):
        stale.unlink(missing_ok=True)
    image = spawn([sys.executable, __file__, "serve", str(directory), str(image_socket)], log)
    qemu = spawn(["qemu-nbd", "-r", "-f", "raw", "-t", "-e", "8", "-x", EXPORT,
                  f"--socket={qemu_socket}", str(directory / "replica.raw")], log)
    runs: list[dict[str, Any]] = []
    uris = {"image": f"nbd+unix:///{EXPORT}?socket={image_socket}",
            "qemu-nbd": f"nbd+unix:///{EXPORT}?socket={qemu_socket}"}
    verified = None
    try:
        wait_for_socket(image_socket, image, timeout_s=120.0)
        wait_for_socket(qemu_socket, qemu)
        if args.verify:
            verified = verify(directory, built, uris["image"])
            progress(f"verify: {'identical' if verified else 'DIFFERENT'}")
        for number in range(args.rounds):
            order = ["image", "qemu-nbd"] if number % 2 == 0 else ["qemu-nbd", "image"]
            for what in order:
                dropped = drop_caches()
                load = load_average()
                meter = CpuMeter()
                meter.start([image.pid, qemu.pid])
                seconds = nbdcopy_s(uris[what])
                cpu = meter.stop()
                runs.append({"round": number + 1, "what": what, "seconds": round(seconds, 3),
                             "bytes_per_s": round(built["size_bytes"] / seconds),
                             "caches_dropped": dropped, "load_average": load, "cpu": cpu})
                progress(f"r{number + 1} {what:<8} {built['size_bytes'] / seconds / 1e6:7.0f} "
                         f"MB/s  our cores {cpu['our_cores']:.2f}, other cores "
                         f"{cpu['other_cores']:.2f}, load {load:.2f}")
    finally:
        for process in (image, qemu):
            process.send_signal(signal.SIGTERM)
        for process in (image, qemu):
            process.wait(timeout=30)
    medians = {what: statistics.median(r["bytes_per_s"] for r in runs if r["what"] == what)
               for what in uris}
    ratio = medians["image"] / medians["qemu-nbd"]
    document = {"benchmark": "recovered_read", "started_at": started_at,
                "command": " ".join([".venv/bin/python", "bench/recovered_read.py",
                                     *argv]),
                "machine": machine(), "build": built, "verified": verified, "runs": runs,
                "median_bytes_per_s": medians, "ratio": round(ratio, 3)}
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"recovered-read-{started_at}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    progress(f"image {medians['image'] / 1e6:.0f} MB/s, qemu-nbd {medians['qemu-nbd'] / 1e6:.0f}"
             f" MB/s (medians of {args.rounds}) -> {ratio:.2f}x; results: {path}")
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return 0 if verified is not False else 1


if __name__ == "__main__":
    sys.exit(main())
