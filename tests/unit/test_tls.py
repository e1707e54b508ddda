"""Site identities and pinned TLS contexts, with handshakes run in memory (``MemoryBIO``)."""

from __future__ import annotations

import datetime
import hashlib
import ssl
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from seawall import tls
from seawall.errors import InvalidInput
from seawall.tls import SiteIdentity, client_context, ensure_identity, is_pinned, server_context

SITE_ID = str(uuid.uuid4())


def identity(root: Path, name: str) -> SiteIdentity:
    (root / name).mkdir()
    return ensure_identity(root / name / "tls", name, str(uuid.uuid4()))


def handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> tuple[ssl.SSLObject,
                                                                       ssl.SSLObject]:
    """Both ends of a finished handshake; the first end to refuse raises ``SSLError``."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_side=False)
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    pending = [client_end, server_end]
    for _ in range(10):
        for end in list(pending):
            try:
                end.do_handshake()
                pending.remove(end)
            except ssl.SSLWantReadError:
                pass
        if not pending:
            return client_end, server_end
    raise AssertionError("the handshake did not finish")


def test_site_init_makes_a_private_key_and_a_ten_year_self_signed_certificate(
        tmp_path: Path) -> None:
    made = ensure_identity(tmp_path / "tls", "prod", SITE_ID)
    assert made.key_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    certificate = x509.load_pem_x509_certificate(made.cert_pem.encode())
    assert certificate.subject == certificate.issuer
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "prod"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:uuid:{SITE_ID}"]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime >= datetime.timedelta(days=3650)
    assert ensure_identity(tmp_path / "tls", "prod", SITE_ID) == made  # made once, then kept
    assert [p.name for p in tmp_path.iterdir()] == ["tls"]


def test_a_second_maker_keeps_the_first_identity(tmp_path: Path) -> None:
    """Two processes starting on a site older than identities: one identity stands."""
    first = ensure_identity(tmp_path / "tls", "prod", SITE_ID)
    tls._create(tmp_path / "tls", "prod", SITE_ID)  # lost the race: finds it made
    assert ensure_identity(tmp_path / "tls", "prod", SITE_ID) == first
    assert [p.name for p in tmp_path.iterdir()] == ["tls"]  # its staging is gone


def test_fingerprint_is_sha256_of_the_der_certificate(tmp_path: Path) -> None:
    made = identity(tmp_path, "prod")
    der = ssl.PEM_cert_to_DER_cert(made.cert_pem)
    assert made.fingerprint == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    assert len(made.fingerprint) == 32 * 3 - 1


def test_pinned_peers_handshake_and_see_each_other(tmp_path: Path) -> None:
    prod, dr, other = (identity(tmp_path, name) for name in ("prod", "dr", "other"))
    server = server_context(dr, [other.cert_pem, prod.cert_pem])  # any of several peers
    client_end, server_end = handshake(client_context(prod, dr.cert_pem), server)
    assert client_end.version() == "TLSv1.3"
    assert is_pinned(client_end, dr.cert_pem) and is_pinned(server_end, prod.cert_pem)
    assert not is_pinned(server_end, other.cert_pem) and not is_pinned(server_end, None)


def test_a_server_refuses_a_client_certificate_it_was_not_given(tmp_path: Path) -> None:
    prod, dr, stranger = (identity(tmp_path, name) for name in ("prod", "dr", "stranger"))
    with pytest.raises(ssl.SSLError):
        handshake(client_context(stranger, dr.cert_pem), server_context(dr, [prod.cert_pem]))
    with pytest.raises(ssl.SSLError):  # no pinned peer: nobody, not whom system CAs vouch for
        handshake(client_context(prod, dr.cert_pem), server_context(dr))


def test_a_client_refuses_a_server_that_is_not_the_pinned_one(tmp_path: Path) -> None:
    prod, dr, impostor = (identity(tmp_path, name) for name in ("prod", "dr", "impostor"))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(client_context(prod, dr.cert_pem), server_context(impostor, [prod.cert_pem]))


def test_trust_added_later_applies_to_the_next_handshakes(tmp_path: Path) -> None:
    prod, dr = identity(tmp_path, "prod"), identity(tmp_path, "dr")
    server = server_context(dr)
    with pytest.raises(ssl.SSLError):
        handshake(client_context(prod, dr.cert_pem), server)
    tls.trust(server, prod.cert_pem)
    handshake(client_context(prod, dr.cert_pem), server)


def test_a_pinned_listener_takes_pins_added_and_refuses_pins_removed(tmp_path: Path) -> None:
    """One context, given once to a listener, follows pairing and unpairing."""
    prod, dr, other = (identity(tmp_path, name) for name in ("prod", "dr", "other"))
    pins = tls.PinnedServerContext(dr, [other.cert_pem])
    listener = pins.context
    with pytest.raises(ssl.SSLError):
        handshake(client_context(prod, dr.cert_pem), listener)
    pins.pin(prod.cert_pem)
    _client_end, server_end = handshake(client_context(prod, dr.cert_pem), listener)
    assert is_pinned(server_end, prod.cert_pem)
    assert pins.fingerprints == {prod.fingerprint, other.fingerprint}
    pins.unpin(prod.cert_pem)  # OpenSSL cannot drop it from a store: a new context
    with pytest.raises(ssl.SSLError):
        handshake(client_context(prod, dr.cert_pem), listener)
    handshake(client_context(other, dr.cert_pem), listener)  # the others still pass
    pins.replace([])
    with pytest.raises(ssl.SSLError):
        handshake(client_context(other, dr.cert_pem), listener)
    assert listener.num_tickets == 0  # no session to resume past a removed pin


def test_check_certificate_takes_exactly_one_pem_certificate(tmp_path: Path) -> None:
    prod, dr = identity(tmp_path, "prod"), identity(tmp_path, "dr")
    tls.check_certificate(prod.cert_pem)
    for bad in ("", "hello", prod.cert_pem + dr.cert_pem, prod.key_path.read_text()):
        with pytest.raises(InvalidInput):
            tls.check_certificate(bad)
