"""The manager's API over HTTPS, through the real ``seawall`` command and real managers
(``site init`` + ``manager run``, no agent): what the CLI pins, what it refuses, and the
operator's certificate reloaded on SIGHUP.

First contact and a wrong ``--fingerprint`` are in ``test_cli_access``; ``--insecure-http``
in ``test_cli_secrets``; pairing over HTTPS in ``tests/e2e/test_two_sites``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from seawall.api_tls import pinned_context, presented_certificate
from seawall.errors import PeerError
from seawall.localsites import free_port
from seawall.tls import certificate_pem, fingerprint, make_certificate, private_key_pem

START_TIMEOUT_S = 60.0


def write_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """An operator's certificate and key (files), as a CA or a tool would hand them over."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_certificate(key, name, str(uuid.uuid4()),
                            datetime.datetime.now(datetime.UTC))
    staged_cert, staged_key = directory / f".{name}.crt", directory / f".{name}.key"
    staged_cert.write_bytes(certificate_pem(cert))
    staged_key.write_bytes(private_key_pem(key))
    staged_key.chmod(0o600)
    staged_key.rename(directory / "api.key")  # each file replaced at once
    staged_cert.rename(directory / "api.crt")
    return directory / "api.crt", directory / "api.key"


def seawall(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SEAWALL_") and key != "XDG_CONFIG_HOME"}
    return subprocess.run([sys.executable, "-m", "seawall", *args], input=stdin,
                          capture_output=True, text=True, env={**env, "HOME": str(home)},
                          timeout=60)


def init(data: Path, api_port: int, *options: str) -> dict[str, str]:
    made = subprocess.run(
        [sys.executable, "-m", "seawall", "site", "init", "--name", data.name, "--data",
         str(data), "--api", f"127.0.0.1:{api_port}", "--replication",
         f"127.0.0.1:{free_port()}", "--peer-api", f"127.0.0.1:{free_port()}", "--json",
         *options], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    answer: dict[str, str] = json.loads(made.stdout)
    return answer


@contextlib.contextmanager
def running(data: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``seawall manager run`` of ``data``, serving once its API answers a TLS handshake."""
    url = init_url(data)
    with (data.parent / f"{data.name}.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "seawall", "manager", "run",
                                    "--data", str(data)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, (data.parent / f"{data.name}.log").read_text()
            try:
                presented_certificate(url, timeout_s=1.0)
                break
            except PeerError:
                assert time.monotonic() < deadline, "the manager did not start"
                time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def init_url(data: Path) -> str:
    config = json.loads((data / "site.json").read_text())
    return f"https://{config['api_host']}:{config['api_port']}"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join(result.stderr.split())  # the console wraps long lines


def test_operator_certificate_reloaded_on_sighup_and_refused_until_accepted(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    cert_a, key_a = write_certificate(tmp_path / "certs", "a")
    fingerprint_a = fingerprint(cert_a.read_text())
    made = init(tmp_path / "prod", free_port(), "--tls-cert", str(cert_a),
                "--tls-key", str(key_a))
    url = made["url"]
    assert made["fingerprint"] == fingerprint_a != made["identity_fingerprint"]
    with running(tmp_path / "prod") as process:
        login = seawall(home, "login", "--url", url, "--token", "-", "--fingerprint",
                        fingerprint_a.lower().replace(":", ""), stdin=made["token"])
        assert login.returncode == 0, login.stderr
        kept_alive = httpx.Client(base_url=url, verify=pinned_context(cert_a.read_text()))
        assert kept_alive.get("/health").status_code == 200

        cert_b, _key_b = write_certificate(tmp_path / "certs", "b")  # over a's files
        fingerprint_b = fingerprint(cert_b.read_text())
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while fingerprint(presented_certificate(url)) != fingerprint_b:
            assert time.monotonic() < deadline, "SIGHUP did not reload the certificate"
            time.sleep(0.05)
        assert process.poll() is None
        assert kept_alive.get("/health").status_code == 200  # an open connection goes on
        kept_alive.close()

        refused = seawall(home, "whoami", "--url", url)
        accept = f"seawall login --url {url} --fingerprint {fingerprint_b}"
        assert refused.returncode == 7 and "has changed" in one_line(refused)
        assert fingerprint_a in one_line(refused) and accept in one_line(refused)
        assert seawall(home, *accept.split()[1:]).returncode == 0  # the kept token goes on
        assert seawall(home, "whoami", "--url", url).stdout.startswith("admin (admin)")


def test_a_new_identity_on_the_same_url_is_refused(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    first = init(tmp_path / "prod", port)
    with running(tmp_path / "prod"):
        login = seawall(home, "login", "--url", first["url"], "--token", "-",
                        stdin=first["token"])
        assert login.returncode == 0 and first["fingerprint"] in one_line(login)
    second = init(tmp_path / "impostor", port)
    assert second["url"] == first["url"] and second["fingerprint"] != first["fingerprint"]
    with running(tmp_path / "impostor"):
        refused = seawall(home, "whoami", "--url", first["url"])
        assert refused.returncode == 7, refused.stderr
        assert (f"pinned {first['fingerprint']}, presented now {second['fingerprint']}"
                in one_line(refused))
        # The pin stays as it was: the next command is refused the same way.
        pins = json.loads((home / ".config/seawall/credentials.json").read_text())["pins"]
        assert pins[first["url"]]["fingerprint"] == first["fingerprint"]
