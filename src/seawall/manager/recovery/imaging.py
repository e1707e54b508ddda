"""Writing a standalone image file from a read-only NBD export (for clones).

Rules:
- ``raw``: read the export in ``CHUNK_BYTES`` pieces and write all but the all-zero ones
  into a file truncated to the volume's size first, so zeros stay holes (sparse).
- ``qcow2``: ``qemu-img convert -p -O qcow2`` from the export's URI (qemu-img skips
  zeros itself); its progress output (``(12.34/100%)``) becomes our progress.
- Either way the file is fsynced before the function returns; ``progress`` gets the bytes
  of this volume done so far. The caller picks the directory (a descriptor) and the name
  (a ``.part`` name, renamed when every volume of the clone is written) and removes it on
  failure. The file is made here, new (``seawall.confined.create_file``: never through a
  symlink, never over a file), and qemu-img writes it through ``/proc/self/fd``: the file
  made, not whatever the path names by then.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable

from seawall.confined import create_file
from seawall.errors import SeawallError
from seawall.nbd.blocking import NbdClient

CHUNK_BYTES = 4 << 20
FORMATS = ("raw", "qcow2")
_QEMU_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

Progress = Callable[[int], None]
"""Bytes of the volume copied so far."""


class ImageToolFailed(SeawallError):
    """qemu-img failed or is missing on this host."""


def write_image(uri: str, directory_fd: int, name: str, size_bytes: int, image_format: str,
                progress: Progress) -> None:
    fd = create_file(directory_fd, name)
    try:
        if image_format == "raw":
            _copy_raw(uri, fd, size_bytes, progress)
        else:
            _convert_qcow2(uri, fd, size_bytes, progress)
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_raw(uri: str, fd: int, size_bytes: int, progress: Progress) -> None:
    zeros = bytes(CHUNK_BYTES)
    with NbdClient(uri) as client:
        os.ftruncate(fd, size_bytes)
        for offset in range(0, size_bytes, CHUNK_BYTES):
            length = min(CHUNK_BYTES, size_bytes - offset)
            data = client.read(offset, length)
            if data != zeros[:length]:
                os.pwrite(fd, data, offset)
            progress(offset + length)


def _convert_qcow2(uri: str, fd: int, size_bytes: int, progress: Progress) -> None:
    command = ["qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2", uri,
               f"/proc/self/fd/{fd}"]
    # stderr goes to a file: a pipe we do not read while reading stdout could fill up.
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors,
                                       pass_fds=(fd,))
        except FileNotFoundError:
            raise ImageToolFailed(
                "qemu-img is not installed (Debian: apt-get install qemu-utils)") from None
        assert process.stdout is not None
        with process.stdout:
            while chunk := os.read(process.stdout.fileno(), 4096):
                for match in _QEMU_PROGRESS.findall(chunk):
                    progress(int(size_bytes * float(match) / 100))
        if process.wait() != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
            raise ImageToolFailed(f"qemu-img convert failed ({process.returncode}): {message}")
