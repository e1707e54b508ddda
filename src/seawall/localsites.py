"""Throwaway sites on localhost, as real processes: for the demo, tests and benchmarks.

A ``LocalSite`` is ``seawall site init`` + ``seawall site run`` in a directory, with free
ports picked for it (outside the kernel's ephemeral range: ``LISTEN_PORTS``), and a JSON
client for its REST API that authenticates as the site's admin (``token``: the one
``site init`` makes, or, for a site that exists already, a new one made from its data
directory as ``seawall site admin-token`` does). The client speaks HTTPS to the API and
takes only the certificate the site serves (read from its files: ``tls``, the pin).
Stopping it sends SIGTERM (what an operator's Ctrl-C does) and waits; ``kill`` sends
SIGKILL to the manager only.

``LocalSite.cli_credentials``: a CLI credentials file (``cli.credentials``) where each new
LocalSite pins its URL's certificate, as a first ``seawall login`` would; the tests set it
(with ``SEAWALL_CREDENTIALS``) so that every ``seawall`` command they run trusts their
sites. None (the demo): no CLI file is touched.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, TextIO

from seawall.api_tls import leaf_pem, pinned_context
from seawall.cli.credentials import CredentialStore
from seawall.config import CONFIG_NAME, SiteConfig
from seawall.errors import PeerError, SeawallError
from seawall.http import JsonClient
from seawall.manager.access.local import first_admin_token, local_admin_token
from seawall.tls import fingerprint

START_TIMEOUT_S = 60.0


LISTEN_PORTS = range(20000, 32768)
"""Below Linux's ephemeral range (32768-60999), where the kernel picks the local ports of
outgoing connections: a port picked there could be taken by some client's connection
before the site binds it (seen with tests running side by side)."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now, outside the ephemeral range, in random order."""
    ports: list[int] = []
    for port in random.sample(LISTEN_PORTS, len(LISTEN_PORTS)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise PeerError(f"no {count} free ports in {LISTEN_PORTS}")


def free_port() -> int:
    return free_ports(1)[0]


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """SIGTERM (what an operator's Ctrl-C does), then SIGKILL if it has not ended in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LocalSite:
    cli_credentials: ClassVar[Path | None] = None

    def __init__(self, name: str, directory: Path, log: TextIO | None = None,
                 advertise_replication: str | None = None,
                 buffer_bytes: int = 512 << 20, bitmap_bytes: int = 8 << 20,
                 database: str | None = None, hypervisor: str = "none") -> None:
        """A new site in ``directory``, or the existing one if it holds a site already."""
        self.name = name
        self.directory = directory
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        token: str | None = None
        if (directory / CONFIG_NAME).exists():
            self.config = SiteConfig.load(directory)
        else:
            api_port, replication_port, peer_api_port = free_ports(3)
            self.config = SiteConfig.create(
                name, directory, f"127.0.0.1:{api_port}", f"127.0.0.1:{replication_port}",
                advertise_replication, buffer_bytes=buffer_bytes, bitmap_bytes=bitmap_bytes,
                database=database, peer_api=f"127.0.0.1:{peer_api_port}",
                hypervisor=hypervisor,
            )
            token = first_admin_token(self.config)
        self.token = token or local_admin_token(self.config, "local-site")
        self.url = self.config.api_url
        self.cert_pem = leaf_pem(self.config.api_tls_files()[0])
        self.tls = pinned_context(self.cert_pem)
        self.api = JsonClient(self.url, timeout_s=120.0, what=f"site {name}", token=self.token,
                              tls=self.tls)
        if self.cli_credentials is not None:
            CredentialStore(self.cli_credentials).put_pin(
                self.url, {"cert_pem": self.cert_pem, "fingerprint": self.fingerprint})

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate the API serves, as ``site init`` prints it."""
        return fingerprint(self.cert_pem)

    def start(self) -> None:
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        """Start ``site run`` without waiting (several sites then start side by side)."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "seawall", "site", "run", "--data", str(self.directory)],
            stdout=self.log, stderr=self.log, env={**os.environ, "SEAWALL_LOG": "INFO"},
        )

    def wait_started(self) -> None:
        """Wait until the launched site's manager answers (it serves once its agent does)."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PeerError(f"site {self.name} exited with {self.process.returncode}")
            try:
                self.api.get("/health")
                return
            except SeawallError:
                time.sleep(0.05)
        raise PeerError(f"site {self.name} did not start in {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def pair_with(self, other: LocalSite) -> None:
        token = other.api.post("/api/v1/pairing/token")["token"]
        self.api.post("/api/v1/pairing", {"peer_url": other.url, "token": token})

    def group_status(self, group: str) -> dict[str, Any]:
        status: dict[str, Any] = self.api.get(f"/api/v1/groups/{group}")["status"]
        return status

    def wait_protecting(self, group: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.group_status(group)["state"] == "protecting":
                return
            time.sleep(0.1)
        raise PeerError(f"group {group} not protecting after {timeout_s:.0f} s")

    def wait_checkpoint(self, group: str, checkpoint_id: int, timeout_s: float = 60.0) -> None:
        """Wait until ``checkpoint_id`` is listed (as replicated) by this site."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            checkpoints = self.api.get(f"/api/v1/groups/{group}/checkpoints")
            if any(c["id"] == checkpoint_id and c["replicated"] for c in checkpoints):
                return
            time.sleep(0.05)
        raise PeerError(f"checkpoint {checkpoint_id} not at site {self.name} in time")
