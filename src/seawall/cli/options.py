"""What every command module of the CLI shares: the common options and the manager client.

The API token sent to a manager is the first of: ``--token``, ``SEAWALL_TOKEN``, the entry
for that manager's URL in the credentials file (``seawall login``, ``cli.credentials``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from seawall.cli.credentials import CredentialStore
from seawall.errors import InvalidInput
from seawall.http import JsonClient

UrlOption = Annotated[str | None, typer.Option("--url", envvar="SEAWALL_URL",
                                               help="Site manager URL (or SEAWALL_URL).")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", help="API token (or SEAWALL_TOKEN; default: the one `seawall login` kept).",
    show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

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


def api_token(url: str, token: str | None = None) -> str | None:
    if token:
        return token
    from_env = os.environ.get("SEAWALL_TOKEN")
    if from_env:
        return from_env
    entry = CredentialStore().get(url)
    return str(entry["token"]) if entry and entry.get("token") else None


def manager(url: str | None, token: str | None = None) -> JsonClient:
    base_url = manager_url(url)
    return JsonClient(base_url, timeout_s=120.0, what="site manager",
                      token=api_token(base_url, token))
SocketGroupOption = Annotated[str | None, typer.Option(
    help="A group (e.g. QEMU's) whose members may connect to the NBD socket; no one else "
         "can ('none': only the service's user).")]
