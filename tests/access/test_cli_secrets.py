"""Secrets kept off the command line, and plain HTTP only on loopback, through the real
``seawall`` command against a real manager process (``site init`` + ``manager run``).

A command line is readable by every local user (``ps``, ``/proc/PID/cmdline``) and kept in
shell history: every token option also takes ``-`` (standard input), ``--token-file`` or
the environment; the tests prove each way reaches the manager.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from seawall.cli.credentials import CredentialStore
from seawall.config import is_loopback
from seawall.localsites import free_port

START_TIMEOUT_S = 60.0


@dataclass
class Site:
    url: str
    token: str
    home: Path
    init_stderr: str
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("SEAWALL_") and key != "XDG_CONFIG_HOME"}
        env.update(HOME=str(self.home), SEAWALL_URL=self.url, **extra)
        return env

    def run(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "seawall", *args], input=stdin,
                              capture_output=True, text=True, env=self.env(**env), timeout=60)


@contextlib.contextmanager
def started_site(tmp_path: Path, api_host: str) -> Iterator[Site]:
    api_port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "site"
    init = subprocess.run(
        [sys.executable, "-m", "seawall", "site", "init", "--name", "prod", "--data", str(data),
         "--api", f"{api_host}:{api_port}", "--replication", f"127.0.0.1:{free_port()}",
         "--peer-api", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=True)
    url = f"https://127.0.0.1:{api_port}"
    CredentialStore(home / ".config" / "seawall" / "credentials.json").put_pin(url, {
        "cert_pem": (data / "tls" / "site.crt").read_text(), "fingerprint": "(the test's)"})
    log_path = tmp_path / "manager.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "seawall", "manager", "run", "--data", str(data)],
            stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                httpx.get(url + "/health", timeout=1.0, verify=False)  # no secret sent
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the manager did not start"
                time.sleep(0.1)
        yield Site(url, init.stdout.strip(), home, " ".join(init.stderr.split()), log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One manager for the module (each test's secrets are its own; login's credentials
    file is the one thing they share, and only the login test relies on it)."""
    with started_site(tmp_path_factory.mktemp("secrets"), "127.0.0.1") as started:
        yield started


def test_api_token_from_stdin_is_not_on_the_command_line(site: Site) -> None:
    process = subprocess.Popen([sys.executable, "-m", "seawall", "whoami", "--token", "-"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=site.env())
    deadline = time.monotonic() + 30
    command_line = b""
    while b"whoami" not in command_line and time.monotonic() < deadline:
        time.sleep(0.01)  # between fork and exec the child's cmdline is still empty
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    out, err = process.communicate(site.token + "\n", timeout=60)
    assert process.returncode == 0, err
    assert out.startswith("admin (admin)")
    assert site.token.encode() not in command_line and b"whoami" in command_line


def test_api_token_from_the_environment_or_a_file_it_names(site: Site, tmp_path: Path) -> None:
    assert site.run("whoami", SEAWALL_TOKEN=site.token).returncode == 0
    token_file = tmp_path / "token"
    token_file.write_text(site.token + "\n")
    token_file.chmod(0o600)
    named = site.run("whoami", SEAWALL_TOKEN_FILE=str(token_file))
    assert named.returncode == 0 and named.stdout.startswith("admin (admin)"), named.stderr
    token_file.write_text("\n")
    empty = site.run("whoami", SEAWALL_TOKEN_FILE=str(token_file))
    assert empty.returncode == 2 and "API token: none given" in empty.stderr
    missing = site.run("whoami", SEAWALL_TOKEN_FILE=str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_login_keeps_a_token_read_from_a_file_or_stdin(site: Site, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(site.token + "\n")
    kept = site.run("login", "--token-file", str(token_file))
    assert kept.returncode == 0 and "as admin" in kept.stderr, kept.stderr
    assert site.run("whoami").stdout.startswith("admin (admin)")
    assert site.run("logout").returncode == 0
    assert site.run("whoami").returncode == 6
    assert site.run("login", "--token", "-", stdin=site.token + "\n").returncode == 0
    assert site.run("whoami").stdout.startswith("admin (admin)")
    both = site.run("login", "--token", "x", "--token-file", str(token_file))
    assert both.returncode == 2 and "not both" in both.stderr


def test_pairing_token_from_a_file_stdin_or_the_environment(site: Site, tmp_path: Path) -> None:
    """A site pairing with itself: a valid token is read, checked, then refused as self."""
    def pairing_token() -> str:
        made = site.run("site", "token", SEAWALL_TOKEN=site.token)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    token_file = tmp_path / "pairing"
    token_file.write_text(pairing_token() + "\n")
    ways: list[tuple[list[str], str, dict[str, str]]] = [
        (["--token-file", str(token_file)], "", {}),
        (["--token", "-"], pairing_token() + "\n", {}),
        ([], "", {"SEAWALL_PAIR_TOKEN": pairing_token()}),
        ([], "", {"SEAWALL_PAIR_TOKEN_FILE": str(token_file)}),
    ]
    for options, stdin, env in ways:
        result = site.run("pair", site.url, *options, stdin=stdin, SEAWALL_TOKEN=site.token,
                          **env)
        assert result.returncode == 2 and "cannot pair with itself" in result.stderr, (
            options, env, result.stderr)
    wrong = site.run("pair", site.url, SEAWALL_TOKEN=site.token, SEAWALL_PAIR_TOKEN="wrong")
    assert wrong.returncode == 6 and "pairing token is invalid" in wrong.stderr
    none = site.run("pair", site.url, SEAWALL_TOKEN=site.token)
    assert none.returncode == 2 and "no pairing token" in none.stderr


def test_join_token_from_a_file_stdin_or_the_environment(site: Site, tmp_path: Path) -> None:
    """Each way hands the token to the join, which checks its form before anything else."""
    join = ["agent", "run", "--data", str(tmp_path / "agent"), "--manager", site.url,
            "--name", "host2", "--control", f"127.0.0.1:{free_port()}"]
    token_file = tmp_path / "join"
    token_file.write_text("swjt_not-a-real-one\n")
    for options, stdin, env in ((["--token-file", str(token_file)], "", {}),
                                (["--token", "-"], "swjt_not-a-real-one\n", {}),
                                ([], "", {"SEAWALL_JOIN_TOKEN": "swjt_not-a-real-one"}),
                                ([], "", {"SEAWALL_JOIN_TOKEN_FILE": str(token_file)})):
        result = site.run(*join, *options, stdin=stdin, **env)
        assert result.returncode == 2 and "not a join token" in result.stderr, (
            options, env, result.stderr)
    assert not (tmp_path / "agent" / "site.json").exists()


def test_plain_http_only_on_loopback(site: Site, tmp_path: Path) -> None:
    """--insecure-http is refused beyond loopback; on loopback it serves plain HTTP."""
    assert "--token -` reads it from standard input, shows the server's fingerprint" in (
        site.init_stderr)
    init = [sys.executable, "-m", "seawall", "site", "init", "--name", "plain", "--replication",
            f"127.0.0.1:{free_port()}", "--peer-api", f"127.0.0.1:{free_port()}",
            "--insecure-http", "--json"]
    beyond = subprocess.run([*init, "--data", str(tmp_path / "a"), "--api", "0.0.0.0:7000"],
                            capture_output=True, text=True, timeout=60)
    assert beyond.returncode == 2 and "only on a loopback" in " ".join(beyond.stderr.split())
    assert not (tmp_path / "a" / "site.json").exists()
    port = free_port()
    made = json.loads(subprocess.run([*init, "--data", str(tmp_path / "b"), "--api",
                                      f"127.0.0.1:{port}"], capture_output=True, text=True,
                                     timeout=60, check=True).stdout)
    assert made["url"] == f"http://127.0.0.1:{port}" and made["fingerprint"] is None
    with (tmp_path / "plain.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "seawall", "manager", "run", "--data",
                                    str(tmp_path / "b")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while subprocess.run([sys.executable, "-m", "seawall", "whoami", "--url", made["url"]],
                             env=site.env(SEAWALL_TOKEN=made["token"]),
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    # A client never sends a token over plain HTTP beyond loopback.
    away = site.run("whoami", "--url", "http://192.0.2.1:7000", SEAWALL_TOKEN=made["token"])
    assert away.returncode == 2 and "over https://" in away.stderr


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST.", True), ("0.0.0.0", False), ("::", False),
    ("10.0.0.1", False), ("192.168.1.5", False), ("fe80::1", False), ("example.org", False),
    ("localhost.example.org", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_url_token_and_json_before_the_command(site: Site) -> None:
    before = site.run("--url", site.url, "--token", "-", "--json", "whoami",
                      stdin=site.token + "\n")
    assert before.returncode == 0 and json.loads(before.stdout)["user"] == "admin", before.stderr
    # The same option after the command wins over the one before it.
    after = site.run("--url", "https://127.0.0.1:1", "whoami", "--url", site.url,
                     SEAWALL_TOKEN=site.token)
    assert after.returncode == 0 and after.stdout.startswith("admin (admin)"), after.stderr
