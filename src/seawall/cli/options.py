"""What every command module of the CLI shares: the common options and the manager client."""

from __future__ import annotations

from typing import Annotated

import typer

from seawall.errors import InvalidInput
from seawall.http import JsonClient

UrlOption = Annotated[str | None, typer.Option("--url", envvar="SEAWALL_URL",
                                               help="Site manager URL (or SEAWALL_URL).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def manager(url: str | None) -> JsonClient:
    if not url:
        raise InvalidInput("no site manager given: use --url URL or set SEAWALL_URL")
    return JsonClient(url.rstrip("/"), timeout_s=120.0, what="site manager")
