"""NBD over TCP's certificates: one CA per agent, its server certificate, client certificates.

Rules and invariants:
- An agent that serves NBD on TCP has its own NBD CA, in ``DATA/nbd-tls/``:
  ``ca-cert.pem``, ``ca-key.pem`` (0600), ``server-cert.pem``, ``server-key.pem`` (0600),
  all four made at once (``seawall.tls.publish_directory``) at ``site init`` / the join,
  or at the first start of an agent made before them. EC P-256 keys, as the site identity.
- The server certificate names the NBD listener (SAN: its IP address or DNS name; for a
  wildcard address, this host's name and FQDN), since QEMU and libnbd check the host
  name they connect to against it.
- The listener requires a client certificate signed by that CA (``server_context``): TLS
  1.2 or 1.3, CERT_REQUIRED, the CA as the only trust anchor (never the system's CAs).
  Python's ``ssl`` has no TLS-PSK (before 3.13), so client certificates are the one method.
- ``issue_client`` writes one consumer's credentials in the layout QEMU's
  ``tls-creds-x509,endpoint=client,dir=DIR`` and libnbd's ``tls-certificates=DIR`` read:
  ``ca-cert.pem``, ``client-cert.pem``, ``client-key.pem``; DIR 0700, the key 0600 (the
  key is made here and never leaves this host except with DIR). DIR must be new or empty.
- There is no revocation list: a consumer's certificate lives ``days`` (default 365); to
  cut every consumer off at once, remove ``DATA/nbd-tls`` and restart the agent (a new CA).
- Key usages are not marked critical, and carry key encipherment, because GnuTLS (QEMU)
  refuses a critical key usage without it even for EC keys.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from seawall.errors import Conflict, NotFound
from seawall.tls import (
    CLOCK_SKEW,
    VALIDITY,
    certificate_pem,
    private_key_pem,
    publish_directory,
    write_new,
)

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"
CLIENT_CERT = "client-cert.pem"
CLIENT_KEY = "client-key.pem"
CLIENT_DAYS = 365
_WILDCARDS = ("0.0.0.0", "::", "")


def ensure_nbd_ca(directory: Path, agent: str, host: str) -> None:
    """The NBD CA and server certificate in ``directory``, made first if there are none."""
    if (directory / SERVER_CERT).exists():
        return
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Seawall NBD CA {agent}")])
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now, VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
              ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _leaf(ca, ca_key, server_key, f"{agent} NBD", now, VALIDITY,
                   ExtendedKeyUsageOID.SERVER_AUTH, _server_names(host))
    publish_directory(directory, {
        CA_CERT: (certificate_pem(ca), 0o644), CA_KEY: (private_key_pem(ca_key), 0o600),
        SERVER_CERT: (certificate_pem(server), 0o644),
        SERVER_KEY: (private_key_pem(server_key), 0o600)})


def issue_client(directory: Path, consumer: str, out: Path, days: int = CLIENT_DAYS) -> Path:
    """Write a client certificate for ``consumer`` and the CA into ``out``; returns ``out``."""
    if not (directory / CA_KEY).exists():
        raise NotFound(f"no NBD CA in {directory}: the agent serves no NBD on TCP "
                       "(--nbd-tcp), or has not started since it was given")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Conflict(f"{out} exists and is not an empty directory")
    ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _leaf(ca, ca_key, key, consumer, datetime.datetime.now(datetime.UTC),
                        datetime.timedelta(days=days), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)  # whatever the umask, and if it existed (empty)
    write_new(out / CLIENT_KEY, private_key_pem(key), 0o600)
    write_new(out / CLIENT_CERT, certificate_pem(certificate), 0o600)
    write_new(out / CA_CERT, certificate_pem(ca), 0o600)
    return out


def server_context(directory: Path) -> ssl.SSLContext:
    """The NBD listener's context: presents the server certificate, requires a client
    certificate signed by the NBD CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=directory / CA_CERT)
    context.load_cert_chain(directory / SERVER_CERT, directory / SERVER_KEY)
    context.num_tickets = 0  # no resumption: every connection shows its certificate
    return context


def client_context(credentials: Path) -> ssl.SSLContext:
    """A client's context from a credentials directory (``issue_client``'s layout): trusts
    only its CA, presents its certificate, checks the server's host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=credentials / CA_CERT)
    context.load_cert_chain(credentials / CLIENT_CERT, credentials / CLIENT_KEY)
    return context


def _server_names(host: str) -> list[x509.GeneralName]:
    if host in _WILDCARDS:
        names = dict.fromkeys([socket.gethostname(), socket.getfqdn(), "localhost"])
        return [x509.DNSName(name) for name in names if name]
    try:
        return [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        return [x509.DNSName(host)]


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime, validity: datetime.timedelta) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + validity)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False))


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
          key: ec.EllipticCurvePrivateKey, name: str, now: datetime.datetime,
          validity: datetime.timedelta, purpose: x509.ObjectIdentifier,
          alt_names: list[x509.GeneralName]) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (_builder(subject, ca.subject, key.public_key(), now, validity)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=True,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=False)
               .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())
