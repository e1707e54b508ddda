"""NBD over TCP with TLS: real clients (qemu-io, qemu-img, nbdinfo, nbdcopy) against
``NbdFrontend`` with a listener context from ``seawall.nbd_certs``, and every client that
must be refused: no TLS at all, TLS without a client certificate, a certificate of
another CA. Each refused one can neither list, read nor write (checked on the file).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_nbd_interop import SIZE_BYTES, TIMEOUT_S, Server, need, run

from seawall.errors import Conflict, NotFound
from seawall.nbd import NbdClient, NbdError
from seawall.nbd import constants as c
from seawall.nbd.client import NbdClientConnection, OptionReply
from seawall.nbd.events import NEED_DATA
from seawall.nbd_certs import (
    CA_CERT,
    CLIENT_CERT,
    CLIENT_KEY,
    client_context,
    ensure_nbd_ca,
    issue_client,
    server_context,
)

pytestmark = pytest.mark.interop


class TlsServer(Server):
    """The interop ``Server`` plus a TLS-only TCP listener and client credentials."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.ca_dir = tmp_path / "nbd-tls"
        ensure_nbd_ca(self.ca_dir, "test", "127.0.0.1")
        self.credentials = issue_client(self.ca_dir, "qemu", tmp_path / "client")
        # Trusts our server, but holds a certificate of another CA.
        ensure_nbd_ca(tmp_path / "other-ca", "other", "127.0.0.1")
        self.stranger = issue_client(tmp_path / "other-ca", "mallory", tmp_path / "stranger")
        shutil.copy(self.ca_dir / CA_CERT, self.stranger / CA_CERT)
        # Trusts our server, holds no certificate.
        self.anonymous = tmp_path / "anonymous"
        self.anonymous.mkdir()
        shutil.copy(self.ca_dir / CA_CERT, self.anonymous / CA_CERT)
        self.port = 0
        self.port = self._call(self.frontend.start_tcp(
            "127.0.0.1", 0, server_context(self.ca_dir)))

    def _call(self, coro: object) -> int:
        return int(asyncio.run_coroutine_threadsafe(  # type: ignore[arg-type]
            coro, self.loop).result(TIMEOUT_S))

    def nbds(self, name: str = "disk", credentials: Path | None = None) -> str:
        directory = credentials or self.credentials
        return f"nbds://127.0.0.1:{self.port}/{name}?tls-certificates={directory}"

    def image_opts(self, name: str = "disk", tls: bool = True) -> str:
        opts = f"driver=nbd,host=127.0.0.1,port={self.port},export={name}"
        return f"{opts},tls-creds=tls0" if tls else opts


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TlsServer]:
    s = TlsServer(tmp_path)
    yield s
    s.close()


def tls_object(directory: Path) -> list[str]:
    return ["--object", f"tls-creds-x509,id=tls0,endpoint=client,dir={directory}"]


def attempt(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def test_client_credentials_are_private_in_qemu_and_libnbd_layout(server: TlsServer) -> None:
    directory = server.credentials
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == [CA_CERT, CLIENT_CERT, CLIENT_KEY]
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((server.ca_dir / "ca-key.pem").stat().st_mode) == 0o600
    with pytest.raises(Conflict):  # never over existing credentials
        issue_client(server.ca_dir, "again", directory)
    with pytest.raises(NotFound):
        issue_client(server.ca_dir.parent / "no-ca", "x", server.ca_dir.parent / "new")


def test_qemu_io_writes_and_reads_over_tls(server: TlsServer) -> None:
    qemu_io = need("qemu-io")
    out = run(qemu_io, *tls_object(server.credentials), "--image-opts", server.image_opts(),
              "-c", "write -P 0xab 0 64k", "-c", "write -f -P 0xcd 64k 4k",
              "-c", "write -z 1M 64k", "-c", "flush", "-c", "write -P 0x33 16380k 4k")
    assert "failed" not in out.lower(), out
    expected = bytearray(SIZE_BYTES)
    expected[: 64 << 10] = b"\xab" * (64 << 10)
    expected[64 << 10 : 68 << 10] = b"\xcd" * 4096
    expected[SIZE_BYTES - 4096 :] = b"\x33" * 4096
    assert server.contents() == bytes(expected)
    out = run(qemu_io, *tls_object(server.credentials), "--image-opts", server.image_opts(),
              "-r", "-c", "read -P 0xab 0 64k", "-c", "read -P 0xcd 64k 4k",
              "-c", "read -P 0 1M 64k", "-c", "read -P 0x33 16380k 4k")
    assert "failed" not in out.lower() and out.count("read ") == 4, out


def test_qemu_img_convert_to_and_from_tls(server: TlsServer, tmp_path: Path) -> None:
    qemu_img = need("qemu-img")
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(SIZE_BYTES // 2) + bytes(SIZE_BYTES // 2))
    run(qemu_img, "convert", *tls_object(server.credentials), "-n", "-f", "raw", str(source),
        "--target-image-opts", server.image_opts())
    assert server.contents() == source.read_bytes()
    back = tmp_path / "back.raw"
    run(qemu_img, "convert", *tls_object(server.credentials), "--image-opts",
        server.image_opts("ro"), "-O", "raw", str(back))
    assert back.read_bytes() == server.ro_path.read_bytes()


def test_nbdinfo_and_nbdcopy_over_nbds(server: TlsServer, tmp_path: Path) -> None:
    info = json.loads(run(need("nbdinfo"), "--json", server.nbds()))
    assert info["protocol"] == "newstyle-fixed" and info["TLS"] is True
    assert info["exports"][0]["export-size"] == SIZE_BYTES
    listing = json.loads(run(need("nbdinfo"), "--json", "--list", server.nbds()))
    assert sorted(e["export-name"] for e in listing["exports"]) == ["disk", "ro"]
    source = tmp_path / "source.raw"
    source.write_bytes(os.urandom(SIZE_BYTES))
    run(need("nbdcopy"), str(source), server.nbds())
    assert server.contents() == source.read_bytes()
    back = tmp_path / "back.raw"
    back.write_bytes(b"")
    run(need("nbdcopy"), server.nbds(), str(back))
    assert back.read_bytes() == source.read_bytes()


def test_seawall_client_over_nbds(server: TlsServer) -> None:
    with NbdClient(server.nbds()) as client:
        client.write(4096, b"seawall", fua=True)
        assert client.read(4096, 7) == b"seawall"
    assert NbdClient(server.nbds()).list_exports() == ["disk", "ro"]
    assert server.contents()[4096:4103] == b"seawall"


def test_clear_text_clients_are_refused(server: TlsServer) -> None:
    before = server.contents()
    plain = f"nbd://127.0.0.1:{server.port}/disk"
    for argv in (
        [need("nbdinfo"), plain],
        [need("nbdinfo"), "--list", plain],
        [need("qemu-io"), "-f", "raw", "-c", "write -P 0x66 0 4k", plain],
        [need("qemu-io"), "--image-opts", server.image_opts(tls=False), "-c", "read 0 4k"],
        [need("nbdcopy"), "--", "[", "nbdkit", "-s", "pattern", "size=1M", "]", plain],
    ):
        result = attempt(*argv)
        assert result.returncode != 0, (argv, result.stdout)
        assert "ro" not in result.stdout.split() and "read 4096" not in result.stdout
    with pytest.raises(NbdError):
        NbdClient(plain).connect()
    assert server.contents() == before


def test_clear_text_list_go_and_export_name_tell_nothing(server: TlsServer) -> None:
    """The raw protocol before STARTTLS: LIST and GO refused, EXPORT_NAME hung up on."""
    with socket.create_connection(("127.0.0.1", server.port), TIMEOUT_S) as sock:
        conn = NbdClientConnection()
        recv_until(sock, conn, 1)  # the greeting
        sock.sendall(conn.send_client_flags())
        sock.sendall(conn.send_list())
        (reply,) = recv_until(sock, conn, 1)
        assert isinstance(reply, OptionReply) and reply.reply_type == c.REP_ERR_TLS_REQD
        sock.sendall(conn.send_go("disk"))
        (reply,) = recv_until(sock, conn, 1)
        assert isinstance(reply, OptionReply) and reply.reply_type == c.REP_ERR_TLS_REQD
        sock.sendall(conn.send_export_name("disk"))
        assert sock.recv(4096) == b""  # closed: no size, no flags, no transmission


def recv_until(sock: socket.socket, conn: NbdClientConnection, count: int) -> list[object]:
    events: list[object] = []
    while len(events) < count:
        event = conn.next_event()
        if event is NEED_DATA:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            conn.receive_data(chunk)
        else:
            events.append(event)
    return events


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_clients_without_a_certificate_of_the_ca_are_refused(server: TlsServer, who: str) -> None:
    credentials = server.anonymous if who == "anonymous" else server.stranger
    before = server.contents()
    for argv in (
        [need("nbdinfo"), server.nbds(credentials=credentials)],
        [need("nbdinfo"), "--list", server.nbds(credentials=credentials)],
        [need("nbdcopy"), "--", "[", "nbdkit", "-s", "pattern", "size=1M", "]",
         server.nbds(credentials=credentials)],
    ):
        result = attempt(*argv)
        assert result.returncode != 0, (argv, result.stdout)
        assert "disk" not in result.stdout
    if who == "stranger":  # QEMU will not even load credentials without a certificate
        result = attempt(need("qemu-io"), *tls_object(credentials), "--image-opts",
                         server.image_opts(), "-c", "write -P 0x66 0 4k")
        assert result.returncode != 0 or "wrote" not in result.stdout, result.stdout
    # The same with Python's ssl, so the server's refusal is what is tested (the client
    # trusts our CA and would go on).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=server.ca_dir / CA_CERT)
    if who == "stranger":
        context.load_cert_chain(credentials / CLIENT_CERT, credentials / CLIENT_KEY)
    assert not list_over_tls(server.port, context)
    assert server.contents() == before


def test_our_certificate_lists_over_the_same_path(server: TlsServer) -> None:
    """The positive control of the refusals above."""
    assert list_over_tls(server.port, client_context(server.credentials)) == ["disk", "ro"]


def list_over_tls(port: int, context: ssl.SSLContext) -> list[str]:
    """STARTTLS, the handshake, NBD_OPT_LIST: the names, or [] if anything was refused."""
    with socket.create_connection(("127.0.0.1", port), TIMEOUT_S) as raw:
        conn = NbdClientConnection()
        recv_until(raw, conn, 1)
        raw.sendall(conn.send_client_flags())
        raw.sendall(conn.send_option(c.OPT_STARTTLS))
        (ack,) = recv_until(raw, conn, 1)
        assert isinstance(ack, OptionReply) and ack.reply_type == c.REP_ACK
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(conn.send_list())
                names = []
                while True:
                    (reply,) = recv_until(sock, conn, 1)  # type: ignore[arg-type]
                    assert isinstance(reply, OptionReply)
                    if reply.reply_type != c.REP_SERVER:
                        return names
                    names.append(reply.data[4:].decode())
        except (ssl.SSLError, OSError, AssertionError):
            return []
