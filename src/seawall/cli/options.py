"""What every command module of the CLI shares: the common options and the manager client.

A manager is called over HTTPS, trusted as ``cli.trust`` says (the pin ``seawall login``
kept for its URL). The API token sent to it is the first of: ``--token``,
``SEAWALL_TOKEN``, the file named by ``SEAWALL_TOKEN_FILE``, the entry for that manager's
URL in the credentials file (``seawall login``, ``cli.credentials``).

Secrets (API, pairing and join tokens) are taken from the command line only as a last
resort: any local user sees a command line in ``ps`` and ``/proc/PID/cmdline``, and the
shell keeps it in its history. ``secret`` reads one from standard input (``--token -``,
asked with no echo at a terminal), a file (``--token-file PATH``), or the environment (an
``ENV`` variable, or a file named by ``ENV_FILE``), which only the user and root can read.
"""

from __future__ import annotations

import getpass
import os
import ssl
import sys
from pathlib import Path
from typing import Annotated

import typer

from seawall.cli.credentials import CredentialStore
from seawall.cli.trust import refusal, trust_for
from seawall.errors import InvalidInput
from seawall.http import JsonClient

UrlOption = Annotated[str | None, typer.Option("--url", envvar="SEAWALL_URL",
                                               help="Site manager URL (or SEAWALL_URL).")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", help="API token, '-' to read it from standard input (or SEAWALL_TOKEN, or a "
    "file named by SEAWALL_TOKEN_FILE; default: the one `seawall login` kept).",
    show_default=False)]
STDIN = "-"
JsonOption = Annotated[bool, typer.Option("--json", envvar="SEAWALL_JSON",
                                          help="Print JSON for scripts.")]

TlsCertOption = Annotated[Path | None, typer.Option(
    "--tls-cert", help="The API's certificate (PEM, chain, leaf first) instead of the site's "
    "identity; with --tls-key. Read again on SIGHUP.")]
TlsKeyOption = Annotated[Path | None, typer.Option(
    "--tls-key", help="The key of --tls-cert (PEM, unencrypted).")]
DataOption = Annotated[Path, typer.Option("--data", help="The site's data directory.")]
ThrottleOption = Annotated[str | None, typer.Option(
    help="Replication bandwidth of the site in bytes/s, shared by its groups by priority "
         "(e.g. 50M); 0 or none: unlimited.")]
LogFormatOption = Annotated[str | None, typer.Option(
    "--log-format", envvar="SEAWALL_LOG_FORMAT",
    help="text (default) or json: one JSON object per line, for log shippers.")]
MetricsOption = Annotated[str | None, typer.Option(
    help="HOST:PORT where the agent serves Prometheus /metrics over TCP (no authentication: "
         "use localhost or a management network); off by default.")]


def manager_url(url: str | None) -> str:
    if not url:
        raise InvalidInput("no site manager given: use --url URL or set SEAWALL_URL")
    return url.rstrip("/")


def secret(value: str | None, path: Path | None, env: str | None, what: str) -> str | None:
    """The secret ``what`` from ``value`` (``-``: standard input), else the file ``path``,
    else the environment variable ``env``, else the file named by ``env``_FILE (if ``env``
    is given); None if none of them gives one. White space around it (a file's newline) is
    not part of it."""
    if value is not None and path is not None:
        raise InvalidInput(f"{what}: give a value or a file, not both")
    if path is None and not value and env is not None:
        value = os.environ.get(env) or None
        file_name = os.environ.get(f"{env}_FILE")
        if value is None and file_name:
            path = Path(file_name)
    if path is not None:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{what}: cannot read {path}: {exc}") from None
    elif value == STDIN:
        text = (getpass.getpass(f"{what}: ") if sys.stdin.isatty()
                else sys.stdin.readline())
    elif value is None:
        return None
    else:
        text = value
    found = text.strip()
    if not found:
        raise InvalidInput(f"{what}: none given (empty)")
    return found


def api_token(url: str, token: str | None = None) -> str | None:
    given = secret(token, None, "SEAWALL_TOKEN", "API token")
    if given:
        return given
    entry = CredentialStore().get(url)
    return str(entry["token"]) if entry and entry.get("token") else None


def manager(url: str | None, token: str | None = None) -> JsonClient:
    """A client of the manager at ``url``, over HTTPS trusted as ``cli.trust`` says."""
    base_url = manager_url(url)
    return manager_client(base_url, api_token(base_url, token), trust_for(base_url))


def manager_client(base_url: str, token: str | None, tls: ssl.SSLContext | None,
                   timeout_s: float = 120.0) -> JsonClient:
    return JsonClient(base_url, timeout_s=timeout_s, what="site manager", token=token, tls=tls,
                      tls_refused=lambda: refusal(base_url))
SocketGroupOption = Annotated[str | None, typer.Option(
    help="A group (e.g. QEMU's) whose members may connect to the NBD socket; no one else "
         "can ('none': only the service's user).")]
HypervisorOption = Annotated[str | None, typer.Option(
    help="The VMs' hypervisor on the agent's host: none (volumes only), libvirt[:URI] "
         "(default URI qemu:///system) or qmp:DIR (a directory of QEMU QMP sockets, e.g. "
         "/var/run/qemu-server for Proxmox VE).")]
