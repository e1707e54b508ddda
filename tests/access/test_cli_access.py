"""Users and logins through the real ``seawall`` command against a real manager process.

The site is made by ``seawall site init`` (whose printed admin token is the way in) and
served by ``seawall manager run`` (no agent is needed for users and tokens). Each command
runs with its own HOME, so the credentials file is the test's.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from seawall.localsites import free_port
from support.readme import examples

PASSWORD = "correct horse battery"
START_TIMEOUT_S = 60.0


@dataclass
class Site:
    data: Path
    url: str
    admin_token: str
    home: Path
    fingerprint: str

    def run(self, *args: str, stdin: str = "", token: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items()
               if key not in ("SEAWALL_TOKEN", "SEAWALL_CREDENTIALS", "XDG_CONFIG_HOME")}
        env.update(HOME=str(self.home), SEAWALL_URL=self.url)
        if token is not None:
            env["SEAWALL_TOKEN"] = token
        result = subprocess.run([sys.executable, "-m", "seawall", *args], input=stdin,
                                capture_output=True, text=True, env=env, timeout=60)
        if check:
            assert result.returncode == 0, f"seawall {' '.join(args)}: {result.stderr}"
        return result

    @property
    def credentials(self) -> Path:
        return self.home / ".config" / "seawall" / "credentials.json"


def fingerprint_in(init_stderr: str) -> str:
    """The API certificate's fingerprint ``site init`` printed."""
    return " ".join(init_stderr.split()).split("fingerprint (sha256): ")[1].split()[0]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    api_port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    init = subprocess.run(
        [sys.executable, "-m", "seawall", "site", "init", "--name", "prod", "--data",
         str(tmp_path / "prod"), "--api", f"127.0.0.1:{api_port}",
         "--replication", f"127.0.0.1:{free_port()}",
         "--peer-api", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=True)
    assert "shown once" in init.stderr  # people read stderr; stdout is the token alone
    token = init.stdout.strip()
    url = f"https://127.0.0.1:{api_port}"
    log = (tmp_path / "manager.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "seawall", "manager", "run", "--data", str(tmp_path / "prod")],
        stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, "the manager exited"
            try:
                httpx.get(url + "/health", timeout=1.0, verify=False)  # no secret sent
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the manager did not start"
                time.sleep(0.1)
        yield Site(tmp_path / "prod", url, token, home, fingerprint_in(init.stderr))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        log.close()


def test_init_token_login_users_and_tokens(site: Site) -> None:
    # Nothing without a token; the token printed at init works once kept by login.
    refused = site.run("user", "list", check=False)
    assert refused.returncode == 6 and "seawall login" in refused.stderr + refused.stdout
    # HTTPS: a fingerprint that is not the server's is refused, and nothing is kept...
    wrong = site.run("login", "--token", site.admin_token, "--fingerprint", "AB" * 32,
                     check=False)
    assert wrong.returncode == 7 and "not AB:AB:" in " ".join(wrong.stderr.split())
    assert not site.credentials.exists()
    # ... on first contact, login shows the certificate's and pins it for the URL.
    first = site.run("login", "--token", site.admin_token)
    assert site.fingerprint in " ".join(first.stderr.split()), first.stderr
    pins = json.loads(site.credentials.read_text())["pins"]
    assert pins[site.url]["fingerprint"] == site.fingerprint
    assert stat.S_IMODE(site.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(site.credentials.parent.stat().st_mode) == 0o700
    kept = json.loads(site.credentials.read_text())["managers"]
    assert kept[site.url]["token"] == site.admin_token and kept[site.url]["user"] == "admin"
    assert "admin" in site.run("user", "list").stdout

    # Users: one with a password, one with a first token printed once.
    site.run("user", "create", "alice", "--role", "operator", "--password-stdin",
             stdin=PASSWORD + "\n")
    bob = site.run("user", "create", "bob", "--role", "viewer")
    bob_token = bob.stdout.strip()
    assert "shown once" in bob.stderr and bob_token.startswith("swat_")
    listed = json.loads(site.run("user", "list", "--json").stdout)
    assert {(u["name"], u["role"], u["password"]) for u in listed} == {
        ("admin", "admin", False), ("alice", "operator", True), ("bob", "viewer", False)}
    assert "bob (viewer)" in site.run("whoami", "--token", bob_token).stdout
    assert "bob (viewer)" in site.run("whoami", token=bob_token).stdout  # SEAWALL_TOKEN

    # A wrong password changes nothing; the right one replaces the kept token.
    wrong = site.run("login", "--user", "alice", "--password-stdin", stdin="nope nope\n",
                     check=False)
    assert wrong.returncode == 6 and "wrong user name or password" in wrong.stderr
    assert json.loads(site.credentials.read_text())["managers"][site.url]["user"] == "admin"
    site.run("login", "--user", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert "alice (operator)" in site.run("whoami").stdout
    denied = site.run("user", "list", check=False)
    assert denied.returncode == 6 and "needs the admin role" in denied.stderr

    # alice's own tokens: make one, see it, revoke it.
    made = site.run("token", "create", "--name", "ci", "--expires", "1h", "--json")
    ci = json.loads(made.stdout)
    assert ci["expires_at"] and ci["name"] == "ci"
    names = {t["name"] for t in json.loads(site.run("token", "list", "--json").stdout)}
    assert {"ci", f"login {os.uname().nodename}"} <= names
    assert "alice" in site.run("whoami", "--token", ci["token"]).stdout
    site.run("token", "revoke", ci["id"])
    assert site.run("whoami", "--token", ci["token"], check=False).returncode == 6

    # logout forgets the kept token and revokes it (a password login made it).
    login_token = json.loads(site.credentials.read_text())["managers"][site.url]["token"]
    site.run("logout")
    assert site.url not in json.loads(site.credentials.read_text())["managers"]
    assert site.run("whoami", check=False).returncode == 6
    assert site.run("whoami", "--token", login_token, check=False).returncode == 6

    # An admin revokes someone else's token; the data directory gives an admin token back.
    bob_id = json.loads(site.run("whoami", "--json", token=bob_token).stdout)["token_id"]
    site.run("token", "revoke", bob_id, "--user", "bob", token=site.admin_token)
    assert site.run("whoami", token=bob_token, check=False).returncode == 6
    again = site.run("site", "admin-token", "--data", str(site.data)).stdout.strip()
    assert "admin (admin)" in site.run("whoami", token=again).stdout
    site.run("user", "set-role", "alice", "admin", token=again)
    site.run("user", "delete", "alice", token=again)
    last = site.run("user", "delete", "admin", token=again, check=False)
    assert last.returncode == 4 and "last admin" in last.stderr


def test_readme_examples_run_and_a_credentials_file_others_can_read_is_not_used(
        site: Site) -> None:
    """The README's user and token commands, as written there, against a real manager (one
    manager for both parts: each start costs seconds of the suite)."""
    site.run("login", "--token", site.admin_token)
    site.credentials.chmod(0o644)
    refused = site.run("whoami", check=False)
    # The console wraps long lines (the path is long): compare on one line.
    assert refused.returncode == 2 and "chmod 600" in " ".join(refused.stderr.split())
    site.credentials.chmod(0o600)
    assert "admin" in site.run("whoami").stdout

    ran = []
    for line, args in examples():
        if args[:1] in (["whoami"], ["user"], ["token"]) and "revoke" not in args:
            result = site.run(*args, stdin="a long passphrase\n", check=False)
            assert result.returncode == 0, f"README: {line}\n{result.stderr}"
            ran.append(tuple(args[:2]))
    assert {("user", "create"), ("token", "create"), ("token", "list"), ("user", "list"),
            ("whoami",)} <= set(ran)
