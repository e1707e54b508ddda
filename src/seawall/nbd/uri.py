"""NBD URIs, as libnbd and the QEMU tools write them: where an export is and how to reach it.

Pure code: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from seawall.errors import InvalidInput

DEFAULT_NBD_PORT = 10809


@dataclass(frozen=True, slots=True)
class NbdAddress:
    """Where an NBD export is: a Unix socket path, or a TCP host and port (``tls``: over
    STARTTLS, with the client credentials in directory ``tls_certificates``)."""

    export_name: str
    socket_path: str | None = None
    host: str | None = None
    port: int = DEFAULT_NBD_PORT
    tls: bool = False
    tls_certificates: str | None = None


def parse_nbd_uri(uri: str) -> NbdAddress:
    """Parse ``nbd+unix:///NAME?socket=PATH``, ``nbd://HOST[:PORT]/NAME`` or
    ``nbds://HOST[:PORT]/NAME?tls-certificates=DIR`` (libnbd's form; DIR as
    ``seawall.nbd_certs.issue_client`` writes it).

    A string without a scheme is taken as a Unix socket path with the default ("") export.
    """
    if "://" not in uri:
        return NbdAddress(export_name="", socket_path=uri)
    parts = urlsplit(uri)
    name = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if parts.scheme == "nbd+unix":
        sockets = parse_qs(parts.query).get("socket")
        if not sockets:
            raise InvalidInput(f"{uri!r}: nbd+unix URIs need ?socket=PATH")
        return NbdAddress(export_name=name, socket_path=sockets[0])
    if parts.scheme in ("nbd", "nbds"):
        if not parts.hostname:
            raise InvalidInput(f"{uri!r}: nbd URIs need a host")
        tls = parts.scheme == "nbds"
        certificates = parse_qs(parts.query).get("tls-certificates") if tls else None
        if tls and not certificates:
            raise InvalidInput(f"{uri!r}: nbds URIs need ?tls-certificates=DIR "
                               "(`seawall volume client-cert`)")
        return NbdAddress(
            export_name=name, host=parts.hostname, port=parts.port or DEFAULT_NBD_PORT,
            tls=tls, tls_certificates=certificates[0] if certificates else None,
        )
    raise InvalidInput(f"{uri!r}: unsupported scheme {parts.scheme!r} (nbd, nbds, nbd+unix)")
