"""``seawall volume ...``: volumes of the site's agents (create, add, remove, list) and
client certificates for NBD over TCP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from seawall.cli.options import JsonOption, TokenOption, UrlOption, manager
from seawall.cli.output import console, print_json, print_table, styled
from seawall.config import SiteConfig
from seawall.units import parse_size_bytes

volume_app = typer.Typer(no_args_is_help=True, help="Volumes served by the site's agents.")

AgentOption = Annotated[str | None, typer.Option(
    "--agent", help="The agent that holds it (`seawall agent list`); default: the site's own.")]


@volume_app.command("create")
def volume_create(
    name: str, size: Annotated[str, typer.Option(help="Size, e.g. 256M or 10G.")],
    agent: AgentOption = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Create a file-backed volume in the data directory of an agent (name unique in the site)."""
    volume = manager(url, token).post("/api/v1/volumes", {
        "name": name, "size_bytes": parse_size_bytes(size), "agent": agent})
    print_one(volume, json_output, f"volume {name} created: {volume['nbd_uri']}")
    if volume.get("warning") and not json_output:
        console.print(styled("warning:", "yellow"), volume["warning"])


@volume_app.command("add")
def volume_add(
    name: str, path: Annotated[Path, typer.Option(
        help="A raw file or block device, on the agent's host.")],
    agent: AgentOption = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Serve an existing raw file or block device as a volume."""
    volume = manager(url, token).post("/api/v1/volumes/add", {
        "name": name, "path": str(path), "agent": agent})
    print_one(volume, json_output, f"volume {name} added: {volume['nbd_uri']}")


@volume_app.command("remove")
def volume_remove(name: str, url: UrlOption = None, token: TokenOption = None,
                  json_output: JsonOption = False) -> None:
    """Remove a volume that is in no group: a created volume's file is deleted, an added
    file or device is only forgotten (left as it is)."""
    removed = manager(url, token).request("DELETE", f"/api/v1/volumes/{name}")
    what = ("its file deleted" if removed["deleted"]
            else "only forgotten: the file or device is left as it is")
    print_one(removed, json_output, f"volume {name} removed from agent {removed['agent']}: "
                                     f"{what} ({removed['path']})")


@volume_app.command("list")
def volume_list(url: UrlOption = None, token: TokenOption = None,
                json_output: JsonOption = False) -> None:
    """List the volumes of every agent with their size and NBD URI."""
    volumes = manager(url, token).get("/api/v1/volumes")
    if json_output:
        print_json(volumes)
        return
    columns = ["agent", "name", "size", "group", "nbd_uri"]
    if any(v.get("nbd_tcp_uri") for v in volumes):
        columns.append("nbd_tcp_uri")
    print_table(volumes, [*columns, "error"] if any(v.get("error") for v in volumes)
                else columns)
    if any(v.get("nbd_client_cert") for v in volumes):
        console.print("nbds:// needs a client certificate of that agent's NBD CA: on the "
                      "agent's host, `seawall volume client-cert CONSUMER --out DIR --data "
                      "DATA`; then nbdinfo 'nbds://HOST:PORT/NAME?tls-certificates=DIR', or "
                      "QEMU's --object tls-creds-x509,id=tls0,endpoint=client,dir=DIR",
                      markup=False, highlight=False, soft_wrap=True)


@volume_app.command("client-cert")
def volume_client_cert(
    consumer: Annotated[str, typer.Argument(
        help="Who uses it (a host, a backup job): the certificate's name.")],
    out: Annotated[Path, typer.Option(
        help="A new (or empty) directory for ca-cert.pem, client-cert.pem, client-key.pem.")],
    data: Annotated[Path, typer.Option(
        "--data", help="The data directory of the agent serving NBD on TCP (the site's, "
                       "or a joined agent's), on this host.")],
    days: Annotated[int, typer.Option(min=1, max=3650,
                                      help="Validity of the certificate.")] = 365,
) -> None:
    """Issue a client certificate for NBD over TCP (nbds://), signed by the agent's NBD CA.

    Local: it needs the agent's data directory (its CA key), so run it on the agent's host
    as the user that runs the agent. DIR is private (0700, files 0600): hand it over to
    the consumer as it is."""
    from seawall.nbd_certs import issue_client

    config = SiteConfig.load(data)
    issue_client(config.nbd_tls_dir, consumer, out.resolve(), days)
    console.print(f"client certificate for {consumer!r} in {out.resolve()}; use it with "
                  f"{config.nbd_tcp_uri('NAME') or 'nbds://HOST:PORT/NAME'}"
                  f"?tls-certificates={out.resolve()}", markup=False, highlight=False,
                  soft_wrap=True)


def print_one(value: dict[str, Any], json_output: bool, text: str) -> None:
    if json_output:
        print_json(value)
    else:
        console.print(text)
