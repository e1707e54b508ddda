"""`seawall files get` interrupted mid-transfer (Ctrl-C, SIGTERM, SIGHUP) leaves `--to` as it
was: no staging directory with partial files, not even the `--to` it made; a later get works.

The restore runs as a real process against a real recovery site, from an ext4 file system
with thousands of files (made by mke2fs -d) written into a protected volume through NBD.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import run_json
from support.groups import GROUP, protect, tag

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("mke2fs") is None, reason="needs e2fsprogs")]

MIB = 1 << 20
VOLUME_BYTES = 96 * MIB
FILE_COUNT = 3000
FILE_BYTES = 8 * 1024
CHUNK_BYTES = 64 << 10


def ext4_with_many_files(tmp_path: Path) -> bytes:
    tree = tmp_path / "tree"
    for index in range(FILE_COUNT):
        directory = tree / f"d{index // 100:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index:04d}").write_bytes(os.urandom(FILE_BYTES))
    image = tmp_path / "disk.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(tree), str(image), "96M"],
                   check=True, capture_output=True)
    return image.read_bytes()


def write_image(uri: str, image: bytes) -> None:
    with NbdClient(uri) as client:
        for offset in range(0, len(image), CHUNK_BYTES):
            chunk = image[offset : offset + CHUNK_BYTES]
            if chunk.count(0) != len(chunk):
                client.write(offset, chunk)
        client.flush()


def files_in(directory: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(directory))


def interrupted_get(dr: LocalSite, checkpoint: int, to: Path, signal_number: int) -> int:
    """Start `files get` of the whole tree into ``to``, signal it once the staging directory
    holds some files; its exit code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "seawall", "files", "get", GROUP, "disk0", "/",
         "--checkpoint", str(checkpoint), "--to", str(to)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SEAWALL_URL": dr.url, "SEAWALL_TOKEN": dr.token},
    )
    try:
        deadline = time.monotonic() + 60
        while not (to.is_dir() and files_in(to) >= 20):  # early: 2,980 still to come
            assert process.poll() is None, f"files get ended first: {process.stderr}"
            assert time.monotonic() < deadline, "no file arrived"
            time.sleep(0.02)
        process.send_signal(signal_number)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    stderr = process.stderr.read()
    assert "Traceback" not in stderr, stderr
    return process.returncode


def test_an_interrupted_files_get_leaves_no_staging_files(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    uri = protect(prod, dr, model, count=0)
    write_image(uri, ext4_with_many_files(tmp_path))
    checkpoint = tag(prod, dr, "many-files")

    kept = tmp_path / "kept"  # an existing --to with a file of its own
    kept.mkdir()
    (kept / "mine.txt").write_bytes(b"not Seawall's")
    assert interrupted_get(dr, checkpoint, kept, signal.SIGINT) == 130
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]

    for signal_number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        made = tmp_path / f"made-{signal_number}" / "restore"  # files get makes both
        assert interrupted_get(dr, checkpoint, made, signal_number) == 128 + signal_number
        assert not made.parent.exists(), list(made.parent.rglob("*"))

    done = run_json(dr, "files", "get", GROUP, "disk0", "/", "--checkpoint", str(checkpoint),
                    "--to", str(kept))
    assert done["files"] == FILE_COUNT and files_in(kept / "disk0") == FILE_COUNT
    assert sorted(p.name for p in kept.iterdir()) == ["disk0", "mine.txt"]
