"""The policy of NBD over TCP: TLS unless plain is asked for on loopback; what a site makes
at ``site init`` for it (an NBD CA and a server certificate naming the listener)."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from seawall.config import SiteConfig
from seawall.errors import InvalidInput
from seawall.nbd.uri import NbdAddress, parse_nbd_uri
from seawall.nbd_certs import CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY


def site(tmp_path: Path, nbd_tcp: str | None, plain: bool = False) -> SiteConfig:
    return SiteConfig.create("prod", tmp_path / "prod", "127.0.0.1:7000", "127.0.0.1:7001",
                             nbd_tcp=nbd_tcp, nbd_tcp_plain=plain)


def test_nbd_on_tcp_is_tls_by_default_with_a_ca_and_a_server_certificate(
        tmp_path: Path) -> None:
    config = site(tmp_path, "10.0.0.2:10809")
    assert not config.nbd_tcp_plain
    assert config.nbd_tcp_uri("v1") == "nbds://10.0.0.2:10809/v1"
    directory = config.nbd_tls_dir
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY])
    for key in (CA_KEY, SERVER_KEY):
        assert stat.S_IMODE((directory / key).stat().st_mode) == 0o600
    server = x509.load_pem_x509_certificate((directory / SERVER_CERT).read_bytes())
    ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    assert server.issuer == ca.subject
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.2")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_plain_nbd_only_on_loopback_and_only_if_asked(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "10.0.0.2", "[::]"):
        with pytest.raises(InvalidInput, match="loopback"):
            site(tmp_path, f"{host}:10809", plain=True)
        assert not (tmp_path / "prod" / "site.json").exists()
    with pytest.raises(InvalidInput, match="loopback"):
        site(tmp_path, None, plain=True)
    config = site(tmp_path, "127.0.0.1:10809", plain=True)
    assert config.nbd_tcp_uri("v1") == "nbd://127.0.0.1:10809/v1"
    assert not config.nbd_tls_dir.exists()


def test_loopback_is_tls_too_unless_asked(tmp_path: Path) -> None:
    config = site(tmp_path, "[::1]:10809")
    assert config.nbd_tcp_uri("v1") == "nbds://[::1]:10809/v1"
    assert (config.nbd_tls_dir / SERVER_CERT).exists()


def test_nbds_uris() -> None:
    assert parse_nbd_uri("nbds://h:1/v?tls-certificates=/c") == NbdAddress(
        "v", host="h", port=1, tls=True, tls_certificates="/c")
    with pytest.raises(InvalidInput, match="tls-certificates"):
        parse_nbd_uri("nbds://h:1/v")
