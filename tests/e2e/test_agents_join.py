"""An agent on another host joins a site, serves volumes, and is reached over mutual TLS.

Real processes on localhost: ``site init`` + ``site run`` (every port explicit), and a
second agent (``agent run --manager … --token …``) in a directory of its own, as it would
run on another host. Volumes are written and read back with qemu-io over NBD; the control
listeners are probed with real TLS clients, pinned and not.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
import pytest

from seawall.config import CONFIG_NAME
from seawall.localsites import LocalSite, free_ports
from seawall.tls import SiteIdentity, client_context, ensure_identity
from support.cli import refused, run_json, seawall
from support.hosts import Host
from support.sites import stop_for_sure

pytestmark = pytest.mark.e2e

MIB = 1 << 20


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[tuple[LocalSite, int, TextIO]]:
    """A running site whose own agent has a control listener; (site, its port, the log)."""
    api, replication, peer_api, control = free_ports(4)
    seawall_init = subprocess.run(
        [sys.executable, "-m", "seawall", "site", "init", "--name", "prod",
         "--data", str(tmp_path / "prod"), "--api", f"127.0.0.1:{api}",
         "--replication", f"127.0.0.1:{replication}", "--peer-api", f"127.0.0.1:{peer_api}",
         "--agent-control", f"127.0.0.1:{control}"],
        capture_output=True, text=True, timeout=60)
    assert seawall_init.returncode == 0, seawall_init.stderr
    log = (tmp_path / "sites.log").open("w")
    site = LocalSite("prod", tmp_path / "prod", log)
    try:
        site.start()
        yield site, control, log
    finally:
        stop_for_sure(site)
        log.close()


def agent_names(site: LocalSite) -> list[str]:
    return [agent["name"] for agent in run_json(site, "agent", "list")]


def tls_get(port: int, server_cert: str, client: SiteIdentity | None,
            path: str = "/health") -> bytes | Exception:
    """GET ``path`` over TLS 1.3 presenting ``client`` (None: no certificate): the raw
    answer, or the exception of a refused handshake (TLS 1.3 sends the server's verdict on
    the client's certificate after the client's side is done, so it shows on reading)."""
    if client is not None:
        context = client_context(client, server_cert)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.load_verify_locations(cadata=server_cert)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
                        .encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            return answer
    except (ssl.SSLError, OSError) as exc:
        return exc


def refused_at_tls(answer: bytes | Exception) -> bool:
    """No HTTP came back: the handshake failed (an alert, or the connection just closed)."""
    return isinstance(answer, Exception) or answer == b""


def put_pins(port: int, server_cert: str, manager: SiteIdentity, pems: list[str]) -> Any:
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=10.0,
                      verify=client_context(manager, server_cert)) as client:
        response = client.put("/control-pins", json={"cert_pems": pems})
        assert response.status_code == 200, response.text
        return response.json()


def said(result: subprocess.CompletedProcess[str]) -> str:
    """What a command printed on stderr, on one line (the console wraps long ones)."""
    return " ".join(result.stderr.split())


def qemu_io(uri: str, command: str, credentials: Path, read_only: bool = False) -> str:
    """qemu-io on ``nbds://HOST:PORT/NAME``, over TLS with the client ``credentials``."""
    address, _, export = uri.removeprefix("nbds://").partition("/")
    host, _, port = address.rpartition(":")
    target = ["--object", f"tls-creds-x509,id=tls0,endpoint=client,dir={credentials}",
              "--image-opts", f"driver=nbd,host={host},port={port},export={export},tls-creds=tls0"]
    result = subprocess.run(["qemu-io", *(["-r"] if read_only else []), "-c", command,
                             *target], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "fail" not in result.stdout.lower(), (
        result.stdout + result.stderr)
    return result.stdout


def test_an_agent_of_another_host_joins_serves_volumes_and_comes_back(
        prod: tuple[LocalSite, int, TextIO], tmp_path: Path) -> None:
    site, _control, log = prod
    host2 = Host("host2", tmp_path / "host2", log)
    try:
        # Bad tokens: a clear error, and nothing kept on either side.
        assert agent_names(site) == ["prod"]
        made = run_json(site, "agent", "token")
        secret, _, pin = made["token"].partition(".")
        wrong = f"{secret[:-2]}{'AA' if not secret.endswith('AA') else 'BB'}.{pin}"
        # A PIN that is not the manager's: refused at the TLS handshake, nothing sent.
        other_pin = f"{secret}.{pin[:-2]}{'AA' if not pin.endswith('AA') else 'BB'}"
        failed = refused(site, "agent", "run", "--data", str(host2.directory),
                         *host2.join_args(site, other_pin))
        assert failed.returncode == 7 and "presented a certificate of fingerprint" in said(
            failed), failed.stderr
        expired = run_json(site, "agent", "token", "--ttl", "1s")["token"]
        time.sleep(1.2)
        for token in (wrong, expired):
            failed = refused(site, "agent", "run", "--data", str(host2.directory),
                             *host2.join_args(site, token))
            assert failed.returncode == 6, failed.stderr
            assert "invalid, expired or already used" in said(failed)
            assert not (host2.directory / CONFIG_NAME).exists()
            assert not (host2.directory / "tls").exists()
        malformed = refused(site, "agent", "run", "--data", str(host2.directory),
                            *host2.join_args(site, "nope"))
        assert malformed.returncode == 2 and "not a join token" in said(malformed)
        assert agent_names(site) == ["prod"]

        # The good token: the agent joins, then serves.
        assert made["command"].startswith(f"seawall agent run --manager {site.url} --token ")
        host2.run(*host2.join_args(site, made["token"]))
        assert host2.process is not None
        host2.wait_reachable(site)
        listed = run_json(site, "agent", "list")
        assert [(a["name"], a["local"], a["reachable"]) for a in listed] == [
            ("prod", True, True), ("host2", False, True)]
        assert listed[1]["control_url"] == f"https://127.0.0.1:{host2.control}"
        config = json.loads((host2.directory / CONFIG_NAME).read_text())
        assert (config["name"], config["site_id"], config["agent_name"]) == (
            "prod", site.config.site_id, "host2")
        assert config["manager_cert_pem"] == site.config.identity().cert_pem
        agent_cert = (host2.directory / "tls" / "site.crt").read_text()
        assert listed[1]["fingerprint"] != listed[0]["fingerprint"]

        # The token is spent; a joined directory takes none.
        other = tmp_path / "host3"
        reused = refused(site, "agent", "run", "--data", str(other), "--manager", site.url,
                         "--token", made["token"], "--name", "host3",
                         "--control", f"127.0.0.1:{free_ports(1)[0]}")
        assert reused.returncode == 6 and "already used" in said(reused)
        assert not (other / CONFIG_NAME).exists()
        before = (host2.directory / CONFIG_NAME).read_bytes()
        again = refused(site, "agent", "run", "--data", str(host2.directory),
                        "--token", run_json(site, "agent", "token")["token"])
        assert again.returncode == 4 and "has joined a site already" in said(again)
        assert (host2.directory / CONFIG_NAME).read_bytes() == before
        assert agent_names(site) == ["prod", "host2"]

        # A volume on host2, written and read over NBD; names are unique in the site.
        volume = run_json(site, "volume", "create", "v2", "--size", "4M", "--agent", "host2")
        assert volume["agent"] == "host2"
        assert (host2.directory / "volumes" / "v2.raw").stat().st_size == 4 * MIB
        assert not (site.directory / "volumes" / "v2.raw").exists()
        seawall(site, "volume", "create", "v1", "--size", "1M")
        duplicate = refused(site, "volume", "create", "v2", "--size", "1M")
        assert duplicate.returncode == 4 and "on agent host2" in said(duplicate)
        uri = volume["nbd_tcp_uri"]
        assert uri == f"nbds://127.0.0.1:{host2.nbd}/v2"
        assert volume["nbd_tls_ca"] == str(host2.directory / "nbd-tls" / "ca-cert.pem")
        credentials = host2.client_certificates(tmp_path / "qemu-tls")
        qemu_io(uri, "write -P 0x5a 512K 1M", credentials=credentials)
        assert "read 1048576/1048576" in qemu_io(uri, "read -P 0x5a 512K 1M", read_only=True,
                                                 credentials=credentials)
        raw = (host2.directory / "volumes" / "v2.raw").read_bytes()
        assert raw[512 << 10:(512 << 10) + MIB] == b"\x5a" * MIB
        assert raw[:512 << 10] == bytes(512 << 10)
        volumes = run_json(site, "volume", "list")
        assert [(v["agent"], v["name"]) for v in volumes] == [("prod", "v1"), ("host2", "v2")]

        # The control listener: only pinned certificates get through the handshake.
        manager = site.config.identity()
        stranger = ensure_identity(tmp_path / "stranger", "stranger", str(uuid.uuid4()))
        ok = tls_get(host2.control, agent_cert, manager)
        assert isinstance(ok, bytes) and ok.startswith(b"HTTP/1.1 200"), ok
        for client in (stranger, None):
            assert refused_at_tls(tls_get(host2.control, agent_cert, client))
        # An extra pin (another member agent) reaches health and coordination only.
        assert put_pins(host2.control, agent_cert, manager,
                        [stranger.cert_pem])["extra"] == [stranger.fingerprint]
        health = tls_get(host2.control, agent_cert, stranger)
        assert isinstance(health, bytes) and health.startswith(b"HTTP/1.1 200"), health
        volumes_answer = tls_get(host2.control, agent_cert, stranger, "/volumes")
        assert isinstance(volumes_answer, bytes) and volumes_answer.startswith(
            b"HTTP/1.1 403"), volumes_answer
        put_pins(host2.control, agent_cert, manager, [])
        assert refused_at_tls(tls_get(host2.control, agent_cert, stranger))

        # Stopped: listed as silent, the listing still works; run again: back, data kept.
        host2.stop()
        assert host2.process.returncode == 0
        listed = run_json(site, "agent", "list")
        assert listed[1]["reachable"] is False and "cannot reach" in listed[1]["error"]
        volumes = run_json(site, "volume", "list")
        assert volumes[0]["name"] == "v1"
        assert volumes[1]["agent"] == "host2" and volumes[1]["name"] is None
        assert "cannot reach agent host2" in volumes[1]["error"]
        table = seawall(site, "volume", "list").stdout
        assert "v1" in table and "error" in table and "refused" in table
        host2.run()
        host2.wait_reachable(site)
        assert "read 1048576/1048576" in qemu_io(uri, "read -P 0x5a 512K 1M", read_only=True,
                                                 credentials=credentials)
        assert [v["name"] for v in run_json(site, "volume", "list")] == ["v1", "v2"]

        # Removed: the site forgets it (it still runs on its host).
        seawall(site, "agent", "remove", "host2")
        assert agent_names(site) == ["prod"]
        assert refused(site, "volume", "create", "v3", "--size", "1M",
                       "--agent", "host2").returncode == 3
    finally:
        host2.stop()


def test_the_sites_own_agent_serves_its_control_api_to_pinned_clients(
        prod: tuple[LocalSite, int, TextIO], tmp_path: Path) -> None:
    site, control, _log = prod
    identity = site.config.identity()  # the manager's, and its own agent's
    ok = tls_get(control, identity.cert_pem, identity, "/volumes")
    assert isinstance(ok, bytes) and ok.startswith(b"HTTP/1.1 200"), ok
    stranger = ensure_identity(tmp_path / "stranger", "stranger", str(uuid.uuid4()))
    assert refused_at_tls(tls_get(control, identity.cert_pem, stranger))
    assert refused_at_tls(tls_get(control, identity.cert_pem, None))
    # Extra pins are saved, and kept across a restart of the site (its agent included).
    put_pins(control, identity.cert_pem, identity, [stranger.cert_pem])
    saved = json.loads((site.config.agent_dir / "control_pins.json").read_text())
    assert saved == {"cert_pems": [stranger.cert_pem]}
    listed = run_json(site, "agent", "list")
    assert listed == [{**listed[0], "name": "prod", "local": True, "reachable": True,
                       "volumes": 0, "control_url": f"https://127.0.0.1:{control}"}]
    site.stop()
    site.start()
    health = tls_get(control, identity.cert_pem, stranger)
    assert isinstance(health, bytes) and health.startswith(b"HTTP/1.1 200"), health
