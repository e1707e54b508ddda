"""Managers trust each other by pinned certificates only: the peer API, forgery, unpairing.

Two real sites (and, where a third party is needed, a site that exists only as a key pair
that paired through the real handshake). Every call goes over real sockets: TLS refusals
are seen by a real client, not asserted from configuration.
"""

from __future__ import annotations

import json
import ssl
import uuid
from pathlib import Path

import httpx
import pytest

from seawall.localsites import LocalSite, free_port
from seawall.tls import SiteIdentity, client_context, ensure_identity
from support.cli import seawall

pytestmark = pytest.mark.e2e


def peer_api(site: LocalSite, identity: SiteIdentity | None) -> httpx.Client:
    """A client of ``site``'s peer API presenting ``identity`` (None: no certificate)."""
    server_cert = site.config.identity().cert_pem
    if identity is not None:
        context = client_context(identity, server_cert)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.load_verify_locations(cadata=server_cert)
    return httpx.Client(base_url=site.config.peer_api_url, verify=context, timeout=10.0)


def refused_at_tls(site: LocalSite, identity: SiteIdentity | None) -> bool:
    with peer_api(site, identity) as client:
        try:
            client.get("/health")
        except httpx.TransportError:  # the server's alert, or the closed connection
            return True
    return False


def outsider(tmp_path: Path, name: str) -> tuple[str, SiteIdentity]:
    site_id = str(uuid.uuid4())
    return site_id, ensure_identity(tmp_path / name, name, site_id)


def pair_outsider(site: LocalSite, name: str, site_id: str, identity: SiteIdentity) -> None:
    """Pair a site with no process (its peer API closed) through the real handshake."""
    token = site.api.post("/api/v1/pairing/token")["token"]
    nowhere = free_port()
    answer = httpx.post(f"{site.url}/api/v1/pairing/accept", verify=site.tls, json={
        "token": token, "site": {
        "site_id": site_id, "name": name, "api_url": f"http://127.0.0.1:{nowhere}",
        "replication_host": "127.0.0.1", "replication_port": nowhere,
        "cert_pem": identity.cert_pem, "peer_api_url": f"https://127.0.0.1:{nowhere}"}})
    assert answer.status_code == 200, answer.text


def peer_names(site: LocalSite) -> list[str]:
    return [p["name"] for p in json.loads(seawall(site, "peer", "list", "--json").stdout)]


def test_peer_calls_need_a_pinned_certificate_and_ignore_claims(
        sites: tuple[LocalSite, LocalSite], tmp_path: Path) -> None:
    prod, dr = sites
    prod.pair_with(dr)
    assert json.loads(seawall(prod, "peer", "list", "--json").stdout)[0][
        "peer_api_url"] == dr.config.peer_api_url
    seawall(prod, "volume", "create", "disk0", "--size", "1M")
    seawall(prod, "group", "create", "app", "--volume", "disk0", "--to", "dr")
    evil_id, evil = outsider(tmp_path, "evil")
    pair_outsider(prod, "evil", evil_id, evil)  # paired with prod, but no group of its own
    _stranger_id, stranger = outsider(tmp_path, "stranger")

    # The peer API: no certificate, or one not pinned, fails the handshake itself.
    assert refused_at_tls(prod, None)
    assert refused_at_tls(prod, stranger)
    assert not refused_at_tls(prod, evil)
    with peer_api(prod, evil) as client:
        users = client.get("/api/v1/groups")  # user routes are not served there
        assert users.status_code == 404 and "not served on the peer API" in users.text
        # Naming dr as the caller does not make evil dr: the certificate says who calls.
        forged = client.post("/api/v1/peer/groups/app/checkpoints",
                             json={"source_site_id": dr.config.site_id, "name": "forged"})
        assert forged.status_code == 404, forged.text
    with peer_api(prod, dr.config.identity()) as client:
        tagged = client.post("/api/v1/peer/groups/app/checkpoints", json={"name": "by-dr"})
        assert tagged.status_code == 201, tagged.text
    names = [c["name"] for c in prod.api.get("/api/v1/groups/app/checkpoints")]
    assert "by-dr" in names and "forged" not in names

    # Peer routes are not served on the plain API, with or without a user token.
    for headers in ({}, {"Authorization": f"Bearer {prod.token}"}):
        plain = httpx.post(f"{prod.url}/api/v1/peer/groups/app/checkpoints", headers=headers,
                           json={"source_site_id": dr.config.site_id, "name": "plain"},
                           verify=prod.tls)
        assert plain.status_code == 404 and "peer API" in plain.json()["message"]

    # Unpairing is refused while a group uses the peer, and changes nothing.
    refused = seawall(prod, "unpair", "dr", check=False)
    assert refused.returncode == 4 and "app" in refused.stderr
    assert peer_names(prod) == ["dr", "evil"] and peer_names(dr) == ["prod"]
    assert not refused_at_tls(dr, prod.config.identity())

    # A peer that cannot be told is forgotten here, which says so; its pin goes at once.
    gone = seawall(prod, "unpair", "evil")
    assert "was not told" in gone.stdout + gone.stderr
    assert peer_names(prod) == ["dr"]
    assert refused_at_tls(prod, evil)
    assert not refused_at_tls(prod, dr.config.identity())


def test_unpair_forgets_at_both_sites_and_a_new_pairing_works(
        sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    prod.pair_with(dr)
    missing = seawall(prod, "unpair", "nowhere", check=False)
    assert missing.returncode == 3 and "nowhere" in missing.stderr
    done = seawall(prod, "unpair", "dr")
    said = done.stdout + done.stderr
    assert "unpaired from site dr" in said and "not told" not in said
    assert peer_names(prod) == [] and peer_names(dr) == []
    assert refused_at_tls(dr, prod.config.identity())  # each site dropped the other's pin
    assert refused_at_tls(prod, dr.config.identity())

    token = seawall(dr, "site", "token").stdout.strip()
    seawall(prod, "pair", dr.url, "--token", token)
    assert peer_names(prod) == ["dr"] and peer_names(dr) == ["prod"]
    assert not refused_at_tls(dr, prod.config.identity())
    seawall(prod, "volume", "create", "disk0", "--size", "1M")
    seawall(prod, "group", "create", "app", "--volume", "disk0", "--to", "dr")  # peer calls
    prod.wait_protecting("app")
    tag = seawall(dr, "checkpoint", "tag", "app", "--name", "after-repair")  # dr -> prod
    dr.wait_checkpoint("app", int(tag.stdout.strip()))
