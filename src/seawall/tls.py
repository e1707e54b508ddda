"""A site's TLS identity, and TLS contexts that trust exactly the certificates pinned for it.

Rules and invariants:
- Each site has one identity, made at ``site init`` (or on the first start of a site made
  before identities existed): an EC P-256 key and a self-signed certificate (CN = site
  name, SAN = ``urn:uuid:<site id>``, ~10 years) in ``DATA/tls/``; the key file is 0600.
  The pair appears at once or not at all (written in a private temporary directory that
  is then renamed), so two processes starting on an old site agree on one identity.
- Trust is pinning, not a PKI: pairing hands each site the other's certificate, and a
  context trusts only the certificates it is given (never the system's CAs, even when it
  is given none). Chains are not trusted past the pin: after the handshake
  ``is_pinned`` compares the peer's certificate byte for byte with the pinned one.
- Both ends authenticate (mutual TLS): the server requires a client certificate. TLS 1.3
  only; host names are not checked, as the pinned certificate names a site, not a host.
- A listener's pins change while it serves (``PinnedServerContext``): pairing adds one,
  unpairing removes one. OpenSSL cannot drop a certificate from a trust store, so a
  removal builds a new context, which every later handshake uses (the listener keeps one
  outer context that hands each handshake the current one). Servers issue no session
  tickets, so a removed certificate cannot come back through a resumed session.
- The same identity serves the agents' replication link and the managers' peer API.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from seawall.atomic import fsync_directory
from seawall.errors import InvalidInput

KEY_NAME = "site.key"
CERT_NAME = "site.crt"
VALIDITY = datetime.timedelta(days=3650)
CLOCK_SKEW = datetime.timedelta(days=1)
"""Backdating of ``not_valid_before``, so a peer whose clock is behind accepts a new cert."""
CERT_PEM_MAX_CHARS = 8192


@dataclass(frozen=True)
class SiteIdentity:
    """Where a site's key and certificate are, and the certificate (what peers pin)."""

    key_path: Path
    cert_path: Path
    cert_pem: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)


def make_certificate(key: ec.EllipticCurvePrivateKey, name: str, site_id: str,
                     now: datetime.datetime) -> x509.Certificate:
    """The self-signed certificate of site ``name`` (``site_id``), valid from ``now``."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(uuid.UUID(site_id).urn)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def ensure_identity(directory: Path, name: str, site_id: str) -> SiteIdentity:
    """The identity kept in ``directory``, made first if there is none."""
    if not (directory / CERT_NAME).exists():
        _create(directory, name, site_id)
    return SiteIdentity(directory / KEY_NAME, directory / CERT_NAME,
                        (directory / CERT_NAME).read_text())


def _create(directory: Path, name: str, site_id: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = make_certificate(key, name, site_id, datetime.datetime.now(datetime.UTC))
    publish_directory(directory, {KEY_NAME: (private_key_pem(key), 0o600),
                                  CERT_NAME: (certificate_pem(certificate), 0o644)})


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def publish_directory(directory: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Make ``directory`` holding ``files`` (name: (content, mode)) at once, or not at all.

    Written in a private temporary directory that is then renamed; if another process made
    ``directory`` first, theirs stands (whoever calls this checks for it first)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        for file_name, (data, mode) in files.items():
            write_new(staging / file_name, data, mode)
        fsync_directory(staging)
        try:
            staging.rename(directory)
        except OSError:
            if not all((directory / file_name).exists() for file_name in files):
                raise
            return  # another process made it first: theirs stands
        fsync_directory(directory.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a new file (never an existing one) with ``mode``, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def check_certificate(cert_pem: str) -> None:
    """Raise ``InvalidInput`` unless ``cert_pem`` holds exactly one X.509 certificate."""
    if len(cert_pem) > CERT_PEM_MAX_CHARS:
        raise InvalidInput("certificate is too long")
    try:
        certificates = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError:
        raise InvalidInput("not a PEM certificate") from None
    if len(certificates) != 1:
        raise InvalidInput(f"expected one certificate, got {len(certificates)}")


def _der(cert_pem: str) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(
        serialization.Encoding.DER)


def fingerprint(cert_pem: str) -> str:
    """SHA-256 of the certificate, as ``openssl x509 -noout -fingerprint -sha256`` shows it."""
    return der_fingerprint(_der(cert_pem))


def der_fingerprint(der: bytes) -> str:
    """``fingerprint`` of a certificate in DER form (as ``getpeercert(binary_form=True)``)."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def server_context(identity: SiteIdentity, peer_certs: Iterable[str] = ()) -> ssl.SSLContext:
    """A listener's context: it presents ``identity`` and takes clients holding a pinned cert.

    More certificates can be pinned later with ``trust``, for the connections that follow.
    """
    context = _context(identity, server_side=True)
    for cert_pem in peer_certs:
        trust(context, cert_pem)
    return context


def client_context(identity: SiteIdentity, peer_cert: str) -> ssl.SSLContext:
    """A dialer's context: it presents ``identity`` and accepts only the server ``peer_cert``."""
    context = _context(identity, server_side=False)
    trust(context, peer_cert)
    return context


def trust(context: ssl.SSLContext, cert_pem: str) -> None:
    context.load_verify_locations(cadata=cert_pem)


class PinnedServerContext:
    """A listener's TLS context whose set of pinned client certificates can change.

    ``context`` is what the listener is given, once. It trusts nothing itself: at each
    ClientHello its callback hands the handshake the context built for the current pins
    (so a handshake that somehow skipped the callback could not verify any client).
    """

    def __init__(self, identity: SiteIdentity, peer_certs: Iterable[str] = ()) -> None:
        self._identity = identity
        self._pins = {fingerprint(cert_pem): cert_pem for cert_pem in peer_certs}
        self._current = server_context(identity, self._pins.values())
        self.context = _context(identity, server_side=True)
        self.context.sni_callback = self._select

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(self._pins)

    def pin(self, cert_pem: str) -> None:
        """Let the holder of ``cert_pem`` through the handshakes that follow."""
        if fingerprint(cert_pem) not in self._pins:
            self._pins[fingerprint(cert_pem)] = cert_pem
            trust(self._current, cert_pem)

    def replace(self, peer_certs: Iterable[str]) -> None:
        """Pin exactly ``peer_certs`` from now on: one no longer listed fails the handshake."""
        pins = {fingerprint(cert_pem): cert_pem for cert_pem in peer_certs}
        self._current, self._pins = server_context(self._identity, pins.values()), pins

    def unpin(self, cert_pem: str) -> None:
        self.replace(pem for fp, pem in self._pins.items() if fp != fingerprint(cert_pem))

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None,
                context: ssl.SSLContext) -> None:
        # Called for every ClientHello, with or without SNI (then ``server_name`` is None).
        ssl_object.context = self._current


def _context(identity: SiteIdentity, server_side: bool) -> ssl.SSLContext:
    # A bare context, not ``create_default_context``: given no CA at all, that one would
    # fall back to the system's CAs, and any certificate they sign would then be taken.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    # The pinned certificate is the trust anchor itself, whatever its extensions say.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_cert_chain(identity.cert_path, identity.key_path)
    if server_side:
        context.num_tickets = 0  # no resumption: every connection shows its certificate
    return context


def is_pinned(ssl_object: ssl.SSLObject | None, cert_pem: str | None) -> bool:
    """Whether the peer of a finished handshake presented exactly ``cert_pem``."""
    if ssl_object is None or cert_pem is None:
        return False
    presented = ssl_object.getpeercert(binary_form=True)
    return presented is not None and presented == _der(cert_pem)
