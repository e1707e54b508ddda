"""How the CLI trusts the site manager it calls: the pin kept for its URL, or a CA.

Rules:
- An ``https://`` URL is called only with the trust kept for it in the credentials file
  (``cli.credentials``: ``seawall login`` keeps it): the pinned certificate as the one
  trust anchor, or the operator's CA bundle with the host name checked
  (``seawall.api_tls``). A URL with none is refused before any connection, as not logged
  in (``Unauthorized``): log in first.
- ``seawall login`` sets it (``login_trust``): ``--ca-bundle FILE``; ``--fingerprint FP``
  (the server must present a certificate of that SHA-256, which is then pinned); else the
  pin kept already; else, on first contact, the certificate presented, whose fingerprint
  is shown, to compare with the one ``site init`` printed. A new pin is kept only once the
  login has succeeded.
- An ``http://`` URL is taken only to a loopback address (a manager in
  ``--insecure-http``): elsewhere a token would cross the network in clear.
- A certificate that fails verification is refused with ``refusal``: the fingerprint
  pinned, the one presented now, and the command that accepts the new one.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from seawall.api_tls import (
    address_of,
    ca_context,
    certificate_of,
    normal_fingerprint,
    pinned_context,
    presented_certificate,
)
from seawall.cli.credentials import CredentialStore
from seawall.config import is_loopback
from seawall.errors import InvalidInput, PeerError, Unauthorized
from seawall.tls import fingerprint


def check_scheme(url: str) -> None:
    """Refuse a URL the CLI would send a token over in clear (or not at all)."""
    scheme = url.partition("://")[0]
    if scheme == "https":
        return
    if scheme == "http" and is_loopback(address_of(url)[0]):
        return
    raise InvalidInput(f"a site manager is called over https://, not {url!r} (plain http:// "
                       "only to a loopback address, for a site run with --insecure-http)")


def _context(pin: dict[str, Any]) -> ssl.SSLContext:
    if "ca_bundle" in pin:
        return ca_context(Path(pin["ca_bundle"]))
    return pinned_context(str(pin["cert_pem"]))


def trust_for(url: str) -> ssl.SSLContext | None:
    """The TLS context for calling ``url`` (None: plain HTTP, loopback only)."""
    check_scheme(url)
    if url.startswith("http://"):
        return None
    pin = CredentialStore().pin(url)
    if pin is None:
        raise Unauthorized(f"no certificate is pinned for {url}: `seawall login --url {url}` "
                           "shows its fingerprint and pins it (or give --fingerprint SHA256 "
                           "or --ca-bundle FILE to login)")
    return _context(pin)


def login_trust(url: str, expected_fingerprint: str | None,
                ca_bundle: Path | None) -> tuple[ssl.SSLContext | None, dict[str, Any] | None]:
    """The context of a login to ``url``, and the pin to keep if it succeeds (None: the one
    kept already, or plain HTTP)."""
    check_scheme(url)
    if expected_fingerprint is not None and ca_bundle is not None:
        raise InvalidInput("give --fingerprint or --ca-bundle, not both")
    if url.startswith("http://"):
        return None, None
    if ca_bundle is not None:
        pin: dict[str, Any] = {"ca_bundle": str(ca_bundle.resolve())}
        return _context(pin), pin
    if expected_fingerprint is not None:
        cert_pem = certificate_of(url, expected_fingerprint)
        return pinned_context(cert_pem), {"cert_pem": cert_pem,
                                          "fingerprint": fingerprint(cert_pem)}
    kept = CredentialStore().pin(url)
    if kept is not None:
        return _context(kept), None
    cert_pem = presented_certificate(url)
    return pinned_context(cert_pem), {"cert_pem": cert_pem, "fingerprint": fingerprint(cert_pem),
                                      "first_contact": True}


def refusal(url: str) -> str:
    """Why the certificate of ``url`` was refused, and how to accept a new one."""
    pin = CredentialStore().pin(url) or {}
    try:
        presented = fingerprint(presented_certificate(url))
    except PeerError as exc:
        return f"the certificate of {url} was refused, and cannot be read again: {exc.message}"
    accept = (f"If the site has a new certificate (a new identity, a new --tls-cert), check "
              f"this fingerprint at the site (`openssl x509 -noout -fingerprint -sha256 -in "
              f"CERT`) and accept it: seawall login --url {url} --fingerprint {presented}")
    if "ca_bundle" in pin:
        return (f"the certificate of {url} (fingerprint {presented}) is not vouched for by "
                f"the CA bundle {pin['ca_bundle']} for this host name: refused. {accept}")
    pinned = pin.get("fingerprint")
    if pinned is not None and normal_fingerprint(str(pinned)) == presented:
        return (f"the certificate pinned for {url} ({presented}) no longer verifies "
                "(expired?): refused; the site needs a new certificate")
    return (f"the certificate of {url} has changed: pinned {pinned}, presented now "
            f"{presented}. Refused: it may be another server in the way. {accept}")
