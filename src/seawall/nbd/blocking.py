"""A tiny blocking NBD client over a socket, for tests, demos and the CLI.

Rules:
- One request in flight at a time; every call returns when its reply has arrived and
  raises ``NbdError`` (with the NBD error value) when the server answered an error.
- Handshake: fixed newstyle, NO_ZEROES when offered, NBD_OPT_GO asking for block sizes;
  for ``nbds://`` URIs NBD_OPT_STARTTLS first (anything but its ACK ends the session: no
  fallback to clear text), then TLS with the credentials directory's certificates.
- Deadline: ``timeout_s`` bounds connecting and each send or receive; a server silent
  that long fails the call with ``PeerError`` naming the export and the deadline. After
  a deadline or a broken connection the client is closed (a late reply must never be
  taken for the next request's): every later call fails at once.
- Real clients (qemu-img, qemu-io, nbdinfo, fio) are what prove interoperability; this
  one only has to be correct and simple. All protocol work is in ``NbdClientConnection``.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from seawall.errors import PeerError, ProtocolViolation, SeawallError
from seawall.nbd.client import (
    ClientEvent,
    ClientRequest,
    NbdClientConnection,
    Negotiated,
    OptionReply,
)
from seawall.nbd.constants import OPT_STARTTLS, REP_ACK, REP_SERVER, U32
from seawall.nbd.events import (
    NEED_DATA,
    Disconnect,
    FlushRequest,
    NbdError,
    ReadReply,
    ReadRequest,
    SimpleReply,
    TrimRequest,
    WriteRequest,
    WriteZeroesRequest,
)
from seawall.nbd.uri import NbdAddress, parse_nbd_uri

_RECV_BYTES = 1 << 20


def _open_socket(address: NbdAddress, timeout_s: float) -> socket.socket:
    if address.socket_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        sock.connect(address.socket_path)
        return sock
    assert address.host is not None
    sock = socket.create_connection((address.host, address.port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class NbdClient:
    """``NbdClient(uri_or_socket_path, export_name=None)``; use as a context manager."""

    def __init__(
        self, uri_or_socket_path: str, export_name: str | None = None, *, timeout_s: float = 30.0
    ) -> None:
        address = parse_nbd_uri(uri_or_socket_path)
        self.export_name = address.export_name if export_name is None else export_name
        self._address = address
        self._timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._conn = NbdClientConnection()
        self._cookies = itertools.count(1)
        self.negotiated: Negotiated | None = None

    def __enter__(self) -> NbdClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def size(self) -> int:
        return self._require_negotiated().size_bytes

    @property
    def transmission_flags(self) -> int:
        return self._require_negotiated().transmission_flags

    def connect(self) -> NbdClient:
        self._handshake_start()
        self._send(self._conn.send_go(self.export_name))
        while True:
            event = self._next()
            if isinstance(event, Negotiated):
                self.negotiated = event
                return self
            if isinstance(event, OptionReply) and event.is_error:
                self.close()
                message = event.data.decode(errors="replace") or hex(event.reply_type)
                raise NbdError(f"NBD_OPT_GO {self.export_name!r} refused: {message}")

    def list_exports(self) -> list[str]:
        """Connect, ask NBD_OPT_LIST, abort. Use on a fresh (unconnected) client."""
        self._handshake_start()
        self._send(self._conn.send_list())
        names: list[str] = []
        while True:
            event = self._next()
            if not isinstance(event, OptionReply):
                continue
            if event.reply_type == REP_SERVER:
                (length,) = U32.unpack_from(event.data, 0)
                names.append(event.data[4 : 4 + length].decode())
            elif event.is_error:
                raise NbdError(f"NBD_OPT_LIST refused: {event.reply_type:#x}")
            else:
                break
        self._send(self._conn.send_abort())
        self._close_socket()
        return names

    def read(self, offset: int, length: int) -> bytes:
        reply = self._request(ReadRequest(next(self._cookies), offset, length))
        return bytes(reply.data) if isinstance(reply, ReadReply) else b""

    def write(self, offset: int, data: bytes | memoryview, fua: bool = False) -> None:
        self._request(WriteRequest(next(self._cookies), offset, data, fua))

    def write_zeroes(
        self, offset: int, length: int, fua: bool = False, no_hole: bool = False
    ) -> None:
        self._request(WriteZeroesRequest(next(self._cookies), offset, length, fua, no_hole))

    def trim(self, offset: int, length: int, fua: bool = False) -> None:
        self._request(TrimRequest(next(self._cookies), offset, length, fua))

    def flush(self) -> None:
        self._request(FlushRequest(next(self._cookies)))

    def close(self) -> None:
        """Soft disconnect (NBD_CMD_DISC) if in transmission, then close the socket."""
        if self._sock is None:
            return
        if self.negotiated is not None:
            with contextlib.suppress(SeawallError):  # a broken connection closes anyway
                self._send(self._conn.send(Disconnect()))
        self._close_socket()

    # --- internals ---------------------------------------------------------------------

    def _handshake_start(self) -> None:
        with self._io("accept the connection"):
            self._sock = _open_socket(self._address, self._timeout_s)
        self._next()  # the greeting
        self._send(self._conn.send_client_flags())
        if self._address.tls:
            self._start_tls()

    def _start_tls(self) -> None:
        from seawall.nbd_certs import client_context  # only TLS clients load it

        self._send(self._conn.send_option(OPT_STARTTLS))
        event = self._next()
        if not isinstance(event, OptionReply) or event.reply_type != REP_ACK:
            self._close_socket()
            raise NbdError("the NBD server did not start TLS")
        assert self._address.tls_certificates is not None and self._sock is not None
        context = client_context(Path(self._address.tls_certificates))
        try:
            with self._io("finish the TLS handshake"):
                self._sock = context.wrap_socket(self._sock,
                                                 server_hostname=self._address.host)
        except NbdError as exc:
            self._close_socket()
            raise NbdError(f"TLS handshake with the NBD server failed: {exc}") from None

    def _request(self, request: ClientRequest) -> ReadReply | SimpleReply:
        self._send(self._conn.send(request))
        while True:
            event = self._next()
            if isinstance(event, SimpleReply):
                if event.error:
                    raise NbdError(
                        f"{type(request).__name__} failed with NBD error {event.error}",
                        event.error,
                    )
                return event
            if isinstance(event, ReadReply):
                return event

    def _next(self) -> ClientEvent:
        while True:
            try:
                event = self._conn.next_event()
            except ProtocolViolation as exc:
                raise NbdError(f"NBD protocol error: {exc.message}") from None
            if event is NEED_DATA:
                with self._io("answer"):
                    chunk = self._require_socket().recv(_RECV_BYTES)
                if not chunk:
                    self._close_socket()
                    raise NbdError("the NBD server closed the connection")
                self._conn.receive_data(chunk)
                continue
            return event

    def _send(self, data: bytes) -> None:
        with self._io("take a request"):
            self._require_socket().sendall(data)

    @contextlib.contextmanager
    def _io(self, doing: str) -> Iterator[None]:
        """One socket operation: a deadline passing or a broken connection closes the
        client (its state is unknown) and raises a ``SeawallError`` saying which."""
        try:
            yield
        except TimeoutError:
            self._close_socket()
            raise PeerError(f"the NBD server of export {self.export_name!r} did not "
                            f"{doing} within {self._timeout_s:g} s") from None
        except ssl.SSLError as exc:  # e.g. the server refused our certificate
            self._close_socket()
            raise NbdError(f"TLS error: {exc}") from None
        except OSError as exc:
            self._close_socket()
            raise NbdError(f"NBD connection to export {self.export_name!r} failed: "
                           f"{exc.strerror or exc}") from None

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise NbdError("not connected")
        return self._sock

    def _require_negotiated(self) -> Negotiated:
        if self.negotiated is None:
            raise NbdError("not connected")
        return self.negotiated

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
