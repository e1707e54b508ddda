"""Real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy, fio) against ``NbdFrontend``.

The front end runs in a background event loop over a plain file backend defined here;
every test checks the file byte for byte against what the client was asked to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.nbd import NbdClient
from seawall.nbd.events import ExportInfo

pytestmark = pytest.mark.interop

SIZE_BYTES = 16 << 20
TIMEOUT_S = 30


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


class FileBackend:
    """pwrite/pread on a file; flush is fsync in a worker thread."""

    def __init__(self, name: str, path: Path, read_only: bool = False) -> None:
        self.fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
        self.info = ExportInfo(name, os.fstat(self.fd).st_size, read_only)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        os.pwrite(self.fd, data, offset)

    def write_zeroes(self, offset: int, length: int) -> None:
        os.pwrite(self.fd, bytes(length), offset)

    def trim(self, offset: int, length: int) -> None:
        self.write_zeroes(offset, length)

    async def flush(self) -> None:
        await asyncio.to_thread(os.fsync, self.fd)

    def close(self) -> None:
        os.close(self.fd)


class Catalog:
    def __init__(self, backends: list[FileBackend]) -> None:
        self.backends = {b.info.name: b for b in backends}

    def backend(self, name: str) -> ExportBackend | None:
        return self.backends.get(name)

    def names(self) -> list[str]:
        return list(self.backends)


class Server:
    def __init__(self, tmp_path: Path) -> None:
        self.disk_path = tmp_path / "disk.img"
        self.disk_path.write_bytes(bytes(SIZE_BYTES))
        self.ro_path = tmp_path / "ro.img"
        self.ro_path.write_bytes(bytes(range(256)) * 4096)
        self.backends = [
            FileBackend("disk", self.disk_path),
            FileBackend("ro", self.ro_path, read_only=True),
        ]
        self.socket_path = str(tmp_path / "nbd.sock")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.frontend = NbdFrontend(Catalog(self.backends))
        self._run(self.frontend.start_unix(self.socket_path))

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT_S)  # type: ignore[arg-type]

    def uri(self, name: str = "disk") -> str:
        return f"nbd+unix:///{name}?socket={self.socket_path}"

    def contents(self) -> bytes:
        return self.disk_path.read_bytes()

    def close(self) -> None:
        self._run(self.frontend.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        for backend in self.backends:
            backend.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    yield s
    s.close()


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


def qemu_io(server: Server, *commands: str, name: str = "disk") -> str:
    argv = [need("qemu-io"), "-f", "raw"]
    for command in commands:
        argv += ["-c", command]
    out = run(*argv, server.uri(name))
    assert "failed" not in out.lower(), out
    return out


def test_qemu_io_write_read_fua_discard_zeroes(server: Server) -> None:
    qemu_io(
        server,
        "write -P 0xab 0 64k",
        "write -f -P 0xcd 64k 4k",  # FUA
        "write -P 0x11 1M 128k",
        "discard 1M 64k",
        "write -z 1088k 4k",  # write zeroes
        "write -P 0x22 1M 4k",
        "flush",
        "write -P 0x33 16380k 4k",  # the last 4 KiB
    )
    expected = bytearray(SIZE_BYTES)
    expected[0 : 64 << 10] = b"\xab" * (64 << 10)
    expected[64 << 10 : 68 << 10] = b"\xcd" * 4096
    expected[1 << 20 : (1 << 20) + (128 << 10)] = b"\x11" * (128 << 10)
    expected[1 << 20 : (1 << 20) + (64 << 10)] = bytes(64 << 10)
    expected[1088 << 10 : 1092 << 10] = bytes(4096)
    expected[1 << 20 : (1 << 20) + 4096] = b"\x22" * 4096
    expected[SIZE_BYTES - 4096 :] = b"\x33" * 4096
    assert server.contents() == bytes(expected)
    out = qemu_io(
        server,
        "read -P 0xab 0 64k",
        "read -P 0xcd 64k 4k",
        "read -P 0x22 1M 4k",
        "read -P 0 1028k 60k",
        "read -P 0x11 1088k 0",
        "read -P 0x33 16380k 4k",
    )
    assert out.count("read ") >= 5


def test_qemu_io_errors(server: Server) -> None:
    argv = [need("qemu-io"), "-f", "raw", "-c", "write -P 1 16M 4k", server.uri()]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert "write failed" in result.stdout + result.stderr or result.returncode != 0
    argv = [need("qemu-io"), "-f", "raw", "-r", "-c", "read -P 0 0 4k", server.uri("ro")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert "Pattern verification failed" in result.stdout  # ro.img starts 00 01 02 ...


def test_qemu_img_info_convert_compare(server: Server, tmp_path: Path) -> None:
    qemu_img = need("qemu-img")
    info = json.loads(run(qemu_img, "info", "--output=json", server.uri()))
    assert info["virtual-size"] == SIZE_BYTES
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(SIZE_BYTES // 2) + bytes(SIZE_BYTES // 2))
    run(qemu_img, "convert", "-n", "-f", "raw", "-O", "raw", str(source), server.uri())
    run(qemu_img, "compare", "-f", "raw", "-F", "raw", str(source), server.uri())
    assert server.contents() == source.read_bytes()
    back = tmp_path / "back.raw"
    run(qemu_img, "convert", "-f", "raw", "-O", "raw", server.uri("ro"), str(back))
    assert back.read_bytes() == server.ro_path.read_bytes()


def test_nbdinfo(server: Server) -> None:
    nbdinfo = need("nbdinfo")
    info = json.loads(run(nbdinfo, "--json", server.uri()))
    export = info["exports"][0]
    assert export["export-size"] == SIZE_BYTES
    assert export["is_read_only"] is False
    assert export["can_multi_conn"] is True
    assert export["can_fua"] is True
    assert export["can_zero"] is True
    ro = json.loads(run(nbdinfo, "--json", server.uri("ro")))["exports"][0]
    assert ro["is_read_only"] is True
    listing = json.loads(run(nbdinfo, "--json", "--list", server.uri()))
    assert sorted(e["export-name"] for e in listing["exports"]) == ["disk", "ro"]


def test_nbdcopy(server: Server, tmp_path: Path) -> None:
    nbdcopy = need("nbdcopy")
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(SIZE_BYTES))
    run(nbdcopy, str(source), server.uri())
    assert server.contents() == source.read_bytes()
    back = tmp_path / "back.raw"
    back.write_bytes(b"")
    run(nbdcopy, server.uri(), str(back))
    assert back.read_bytes() == source.read_bytes()


def test_fio_nbd_engine_with_verify(server: Server) -> None:
    fio = need("fio")
    if "nbd" not in run(fio, "--enghelp"):
        pytest.skip("fio was built without the nbd ioengine")
    run(
        fio,
        "--name=verify",
        "--ioengine=nbd",
        f"--uri={server.uri()}",
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--size=8M",
        "--verify=crc32c",
        "--do_verify=1",
        "--output-format=json",
    )


def test_blocking_client_sees_what_qemu_wrote(server: Server) -> None:
    qemu_io(server, "write -P 0x5a 12k 4k")
    with NbdClient(server.uri()) as client:
        assert client.read(12 << 10, 4096) == b"\x5a" * 4096
        client.write(0, b"seawall", fua=True)
    assert server.contents()[:7] == b"seawall"
