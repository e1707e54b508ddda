"""The manager's user API over TLS: the certificate it serves, and how clients trust it.

Server (``ApiTls``):
- The API serves the site's identity (``DATA/tls``, made at ``site init``), or the
  certificate chain and key the operator gives (``--tls-cert/--tls-key``). Plain HTTP is
  only ``--insecure-http`` on a loopback address (``SiteConfig`` refuses any other).
- ``reload()`` (on SIGHUP) reads the files again. The listener keeps one outer context
  whose ``sni_callback`` hands every ClientHello the current inner context (OpenSSL takes
  the certificate of the context set there), so the server is not restarted: open
  connections finish on the old certificate, new handshakes get the new one. Files that do
  not load (a key that does not match, a half-written file) leave the current one served.
- TLS 1.2 at least; no client certificate is asked (users authenticate with API tokens).

Clients (the CLI, a manager pairing with another, a joining agent):
- ``pinned_context(cert_pem)``: the pinned certificate is the only trust anchor (no system
  CA; OpenSSL's partial-chain flag lets a self-signed leaf anchor itself). Host names are
  not checked: the pin names one certificate, which is stronger than any name in it, and a
  certificate some CA issued for the host name cannot stand in for the pin. A leaf
  (``CA:FALSE``) signs nothing that OpenSSL would take, so only that very certificate, with
  its key proven in the handshake, passes.
- Why verify *in* the handshake and not compare the digest after one made without
  verification: a client library (httpx) sends its request, API token included, as soon as
  the handshake ends; a check after it would come after the secret has left. Here a wrong
  certificate fails the handshake and nothing is sent.
- A fingerprint alone (``--fingerprint``, a token's PIN) is turned into a pin by
  ``certificate_of``: a handshake with verification off that sends nothing but the
  ClientHello, whose certificate must have that digest; only then is it the anchor of the
  connection that carries secrets.
- ``ca_context(bundle)``: an operator's CA instead of a pin, with the host name checked as
  any PKI client does; only that bundle is trusted, not the system's CAs.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path

import httpx
from cryptography import x509

from seawall.errors import InvalidInput, PeerError
from seawall.tls import certificate_pem, fingerprint

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 10.0


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A context serving ``cert_path`` (a chain, leaf first) with ``key_path``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.num_tickets = 0  # no resumption: every connection shows the current certificate
    context.options |= ssl.OP_NO_TICKET
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot serve the API with certificate {cert_path} and key "
                           f"{key_path}: {exc}") from None
    return context


def leaf_pem(cert_path: Path) -> str:
    """The first certificate of the PEM file ``cert_path`` (the one served, and pinned)."""
    try:
        certificates = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read a PEM certificate from {cert_path}: {exc}") from None
    return certificate_pem(certificates[0]).decode()


class ApiTls:
    """The API listener's TLS: ``context`` is given to the server once; ``reload`` swaps
    the certificate behind it for the handshakes that follow."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path, self.key_path = cert_path, key_path
        self._current = server_context(cert_path, key_path)
        self.cert_pem = leaf_pem(cert_path)
        self.context = server_context(cert_path, key_path)
        self.context.sni_callback = self._select

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)

    def reload(self) -> bool:
        """Serve the files' certificate from the next handshake on; False (and the current
        one kept) if they do not load."""
        try:
            current, cert_pem = server_context(self.cert_path, self.key_path), leaf_pem(
                self.cert_path)
        except InvalidInput as exc:
            log.error("API certificate not reloaded, still serving %s: %s", self.fingerprint,
                      exc.message)
            return False
        self._current, self.cert_pem = current, cert_pem
        log.info("API certificate reloaded from %s: fingerprint (sha256) %s", self.cert_path,
                 self.fingerprint)
        return True

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None,
                context: ssl.SSLContext) -> None:
        ssl_object.context = self._current  # every ClientHello, with or without SNI


# --- clients -----------------------------------------------------------------------------


def pinned_context(cert_pem: str) -> ssl.SSLContext:
    """A client context that takes exactly the server certificate ``cert_pem``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the pin, not a name, says who the server is
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=cert_pem)
    return context


def ca_context(bundle: Path) -> ssl.SSLContext:
    """A client context that trusts the CAs of ``bundle`` only, host names checked."""
    try:
        return ssl.create_default_context(cafile=str(bundle))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot use CA bundle {bundle}: {exc}") from None


def address_of(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    if not parsed.host:
        raise InvalidInput(f"not a manager URL: {url!r} (expected https://HOST:PORT)")
    return parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)


def presented_certificate(url: str, timeout_s: float = FETCH_TIMEOUT_S) -> str:
    """The certificate the server at ``url`` presents (PEM), from a handshake made without
    verification: nothing but the handshake is sent, so it carries no secret."""
    host, port = address_of(url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise PeerError(f"cannot reach {url} over TLS: {exc}") from None
    if der is None:
        raise PeerError(f"{url} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)


def normal_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as ``fingerprint`` writes it (``AB:CD:…``), from any case,
    with or without colons; ``InvalidInput`` if it is not one."""
    digits = text.strip().replace(":", "").upper()
    if len(digits) != 64 or any(c not in "0123456789ABCDEF" for c in digits):
        raise InvalidInput(f"not a SHA-256 fingerprint: {text!r} (64 hex digits, as "
                           "`seawall site init` prints it)")
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def certificate_of(url: str, expected_fingerprint: str) -> str:
    """The certificate of ``url`` if its SHA-256 is ``expected_fingerprint``, to pin."""
    cert_pem = presented_certificate(url)
    presented = fingerprint(cert_pem)
    if presented != normal_fingerprint(expected_fingerprint):
        raise PeerError(f"{url} presented a certificate of fingerprint {presented}, not "
                        f"{normal_fingerprint(expected_fingerprint)}: refused")
    return cert_pem


def is_verify_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (an httpx error) came from a certificate that failed verification."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False

