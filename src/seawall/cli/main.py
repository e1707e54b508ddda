"""The ``seawall`` command: parse, call a manager (or start a process), print.

Errors: every ``SeawallError`` becomes one line on stderr and its class's exit code, here
and nowhere else. Commands that talk to a site manager take ``--url`` or ``SEAWALL_URL``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from seawall.api_tls import leaf_pem
from seawall.cli.access import add_access_commands
from seawall.cli.agents import add_agent_commands, site_config
from seawall.cli.files import add_files_commands
from seawall.cli.groups import add_group_commands
from seawall.cli.live import add_live_commands
from seawall.cli.monitoring import add_monitoring_commands
from seawall.cli.options import (
    DataOption,
    HypervisorOption,
    JsonOption,
    LogFormatOption,
    MetricsOption,
    SocketGroupOption,
    ThrottleOption,
    TlsCertOption,
    TlsKeyOption,
    TokenOption,
    UrlOption,
    manager,
    secret,
)
from seawall.cli.output import console, print_json, print_line, print_table, styled, time_text
from seawall.cli.recovery import add_recovery_commands, failover_app
from seawall.cli.vms import add_vm_commands
from seawall.cli.volumes import print_one, volume_app
from seawall.config import SiteConfig, check_database_url
from seawall.errors import InvalidInput, SeawallError
from seawall.local_access import enter_private_umask
from seawall.observability.logs import setup_logging
from seawall.tls import fingerprint
from seawall.units import parse_size_bytes
from seawall.wan.schedule import parse_rate_bytes_per_s

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Seawall: continuous data protection and disaster recovery.",
                  pretty_exceptions_show_locals=False)  # a bug's traceback shows no token
site_app = typer.Typer(no_args_is_help=True, help="Create and run sites.")
group_app = typer.Typer(no_args_is_help=True, help="Protection groups.")
checkpoint_app = typer.Typer(no_args_is_help=True, help="Checkpoints of a group.")
peer_app = typer.Typer(no_args_is_help=True, help="Paired sites.")
agent_app = typer.Typer(no_args_is_help=True,
                        help="Run an agent; join agents of other hosts to the site.")
manager_app = typer.Typer(no_args_is_help=True, help="Run a site manager alone.")
for sub, name in ((site_app, "site"), (volume_app, "volume"), (group_app, "group"),
                  (checkpoint_app, "checkpoint"), (peer_app, "peer"), (agent_app, "agent"),
                  (manager_app, "manager")):
    app.add_typer(sub, name=name)
add_recovery_commands(app)  # failover, clone, report: seawall.cli.recovery
add_live_commands(failover_app, app, group_app)  # failover live/commit/rollback, move, reverse
add_access_commands(app)  # login, logout, whoami, user, token: seawall.cli.access
add_files_commands(app)  # files ls/get: seawall.cli.files
add_monitoring_commands(app, group_app)  # group status, alert/event/task list
add_group_commands(group_app)  # group create/update/show: seawall.cli.groups
add_agent_commands(agent_app)  # agent run/token/list/remove: seawall.cli.agents
add_vm_commands(app)  # vm list: seawall.cli.vms


@app.callback()
def global_options(url: UrlOption = None, token: TokenOption = None,
                   json_output: JsonOption = False) -> None:
    """Seawall: continuous data protection and disaster recovery.

    --url, --token and --json may come before the command too (`seawall --url URL export
    ...`): they then act as SEAWALL_URL, SEAWALL_TOKEN and SEAWALL_JSON for it, and the
    same option after the command still wins."""
    if url is not None:
        os.environ["SEAWALL_URL"] = url
    given = secret(token, None, None, "API token")
    if given is not None:
        os.environ["SEAWALL_TOKEN"] = given
    if json_output:
        os.environ["SEAWALL_JSON"] = "1"


# --- sites -----------------------------------------------------------------------------


@site_app.command("init")
def site_init(
    name: Annotated[str, typer.Option(help="Site name, unique among paired sites.")],
    data: DataOption,
    api: Annotated[str, typer.Option(help="HOST:PORT of the REST API.")] = "127.0.0.1:7000",
    replication: Annotated[str, typer.Option(
        help="HOST:PORT where the agent receives replication.")] = "127.0.0.1:7001",
    advertise_replication: Annotated[str | None, typer.Option(
        help="HOST:PORT peers connect to for replication, if not --replication "
             "(NAT, a separate replication network).")] = None,
    nbd_tcp: Annotated[str | None, typer.Option(
        help="Also serve volumes over NBD on this TCP HOST:PORT, with TLS and client "
             "certificates (`seawall volume client-cert`).")] = None,
    nbd_tcp_plain: Annotated[bool, typer.Option(
        "--nbd-tcp-plain", help="Serve NBD on TCP without TLS: only on a loopback "
                                "--nbd-tcp address.")] = False,
    buffer: Annotated[str, typer.Option(
        help="Memory for unsent writes, shared by the agent's groups; at 90% of its share a "
             "group tracks dirty ranges instead and bitmap-syncs later.")] = "512M",
    bitmap_max: Annotated[str, typer.Option(
        "--bitmap-max", help="Memory bound of each volume's dirty map (coarser past it).")
    ] = "8M",
    throttle: ThrottleOption = None,
    throttle_schedule: Annotated[str | None, typer.Option(
        help="Rates by local time of day, e.g. '08:00-18:00=10M,18:00-08:00=100M'; "
             "other times use --throttle.")] = None,
    metrics: MetricsOption = None,
    database: Annotated[str | None, typer.Option(
        help="The manager's database: postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/NAME "
             "(or ?host=/socket/dir; a password is better in ~/.pgpass or PGPASSWORD than on "
             "a command line, which ps shows); default: SQLite in DATA/manager.db.")] = None,
    peer_api: Annotated[str | None, typer.Option(
        help="HOST:PORT where paired managers call this one (mutual TLS); "
             "default: the --api host, its port + 2.")] = None,
    agent_control: Annotated[str | None, typer.Option(
        help="HOST:PORT where the site's agent also serves its control API over mutual TLS "
             "(for agents of other hosts in its groups); default: none.")] = None,
    socket_group: SocketGroupOption = None,
    clone_dir: Annotated[Path | None, typer.Option(
        help="Clones are written only inside it (`clone --to` is relative to it); "
             "default: DATA/clones.")] = None,
    scripts_dir: Annotated[Path | None, typer.Option(
        help="Recovery scripts run only from it (made root-only, 0700); groups name a "
             "script in it. Default: DATA/scripts.")] = None,
    script_user: Annotated[str | None, typer.Option(
        help="Run recovery scripts as this user (the agent runs as root); default: root.")
    ] = None,
    storage_root: Annotated[list[Path] | None, typer.Option(
        help="A directory (repeat for more) where groups may keep journals (--storage) and "
             "pre-seeded replicas (--preseed), besides the data directory.")] = None,
    hypervisor: HypervisorOption = "none",
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    insecure_http: Annotated[bool, typer.Option(
        "--insecure-http", help="Serve the API in plain HTTP, without TLS: only on a "
                                "loopback --api address.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Create a site: configuration, identity, database; prints its URL and fingerprint."""
    enter_private_umask()  # the site's files are its own, whatever the caller's umask
    if database is not None:
        from seawall.manager.models import open_database

        database = check_database_url(database)
        open_database(database)  # reachable and migrated, before anything is written
    config = SiteConfig.create(name, data, api, replication, advertise_replication, nbd_tcp,
                               parse_size_bytes(buffer),
                               parse_rate_bytes_per_s(throttle) if throttle else None,
                               throttle_schedule, parse_size_bytes(bitmap_max), metrics,
                               database, peer_api, agent_control,
                               socket_group=None if socket_group == "none" else socket_group,
                               nbd_tcp_plain=nbd_tcp_plain, clone_dir=clone_dir,
                               scripts_dir=scripts_dir, script_user=script_user,
                               storage_roots=tuple(storage_root or ()),
                               hypervisor=hypervisor or "none", tls_cert=tls_cert,
                               tls_key=tls_key, insecure_http=insecure_http)
    api_fingerprint = None if config.insecure_http else fingerprint(
        leaf_pem(config.api_tls_files()[0]))
    from seawall.manager.access.local import first_admin_token

    token = first_admin_token(config)
    if json_output:
        print_json({"name": config.name, "site_id": config.site_id,
                    "data": str(config.data_dir), "url": config.api_url,
                    "fingerprint": api_fingerprint,
                    "identity_fingerprint": config.identity().fingerprint, "token": token})
        return
    console.print(f"site {config.name} created in {config.data_dir} "
                  f"(id {config.site_id}); run: seawall site run --data {config.data_dir}")
    console.print(f"API: {config.api_url}", highlight=False)
    if api_fingerprint is not None:
        console.print(f"API certificate fingerprint (sha256): {api_fingerprint}")
    if api_fingerprint != config.identity().fingerprint:
        console.print(f"site identity fingerprint (sha256, for peers): "
                      f"{config.identity().fingerprint}")
    if token is None:
        console.print("the database has users already: no admin token made "
                      "(`seawall site admin-token` makes one)")
        return
    console.print("API token of the user admin (shown once, only its hash is kept; "
                  f"`seawall login --url {config.api_url} --token -` reads it from standard "
                  "input, shows the server's fingerprint to compare with the one above, and "
                  "keeps both for you):",
                  highlight=False)
    print_line(token)


@site_app.command("admin-token")
def site_admin_token(
    data: DataOption,
    name: Annotated[str, typer.Option("--name", help="A label for the token.")] = "admin-token",
) -> None:
    """Print a new API token of the user admin, from the site's data directory (no API).

    For whoever holds DATA: a lost admin token, or a site made before it had users.
    """
    from seawall.manager.access.local import local_admin_token

    print_line(local_admin_token(SiteConfig.load(data), name))


@site_app.command("run")
def site_run(data: DataOption, log_format: LogFormatOption = None,
             tls_cert: TlsCertOption = None, tls_key: TlsKeyOption = None) -> None:
    """Run the site manager and the site's agent (foreground; Ctrl-C stops both).

    SIGHUP reloads the API's certificate and key from their files."""
    from seawall.manager.runner import run_site

    setup_logging(log_format)
    run_site(_with_api_tls(site_config(data), tls_cert, tls_key))


def _with_api_tls(config: SiteConfig, tls_cert: Path | None,
                  tls_key: Path | None) -> SiteConfig:
    """``config`` serving the API with ``--tls-cert/--tls-key`` for this process, if given."""
    if tls_cert is None and tls_key is None:
        return config
    return config.with_overrides(api_tls_cert=tls_cert.resolve() if tls_cert else None,
                                 api_tls_key=tls_key.resolve() if tls_key else None)


@site_app.command("token")
def site_token(url: UrlOption = None, token: TokenOption = None) -> None:
    """Print a single-use pairing token (valid 1 h) for another site to pair with this one."""
    print_line(manager(url, token).post("/api/v1/pairing/token")["token"])


@app.command("pair")
def pair(
    peer_url: Annotated[str, typer.Argument(help="URL of the other site's manager.")],
    token: Annotated[str | None, typer.Option(
        help="Token printed by `seawall site token` there; '-': read it from standard input "
             "(or SEAWALL_PAIR_TOKEN, or a file named by SEAWALL_PAIR_TOKEN_FILE).",
        show_default=False)] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="Read that token from this file.")] = None,
    url: UrlOption = None,
) -> None:
    """Pair this site (--url) with the site at PEER_URL (API token: SEAWALL_TOKEN or login)."""
    pairing_token = secret(token, token_file, "SEAWALL_PAIR_TOKEN", "pairing token")
    if pairing_token is None:
        raise InvalidInput("no pairing token: give --token TOKEN (or -), --token-file PATH or "
                           "SEAWALL_PAIR_TOKEN (`seawall site token` at the other site)")
    peer = manager(url).post("/api/v1/pairing", {"peer_url": peer_url, "token": pairing_token})
    console.print(f"paired with site {peer['name']} ({peer['api_url']})")


@app.command("unpair")
def unpair(peer: Annotated[str, typer.Argument(help="Name of the paired site.")],
           url: UrlOption = None) -> None:
    """Forget the paired site PEER here and there (refused while groups use it)."""
    result = manager(url).delete(f"/api/v1/peers/{peer}")
    console.print(f"unpaired from site {peer}")
    if not result["peer_told"]:
        console.print(styled(f"{peer} was not told ({result['peer_error']}): run "
                             "`seawall unpair` there too", "yellow"))
    if not result["agent_forgot"]:
        console.print(styled(f"the agent was not told ({result['agent_error']}); it will "
                             "forget the pin at its next start", "yellow"))


@peer_app.command("list")
def peer_list(url: UrlOption = None, token: TokenOption = None,
              json_output: JsonOption = False) -> None:
    """List paired sites."""
    peers = manager(url, token).get("/api/v1/peers")
    if json_output:
        print_json(peers)
    else:
        print_table(peers, ["name", "api_url", "replication", "paired_at", "fingerprint"])


# --- groups ----------------------------------------------------------------------------


@group_app.command("list")
def group_list(url: UrlOption = None, token: TokenOption = None,
               json_output: JsonOption = False) -> None:
    """List protection groups of this site (either role)."""
    groups = manager(url, token).get("/api/v1/groups")
    if json_output:
        print_json(groups)
    else:
        for group in groups:
            group["volumes"] = ",".join(v["name"] for v in group["volumes"])
        print_table(groups, ["name", "role", "peer", "volumes", "checkpoint_interval_s"])


@group_app.command("resync")
def group_resync(name: str, url: UrlOption = None, token: TokenOption = None,
                 json_output: JsonOption = False) -> None:
    """Compare every volume with the recovery site and ship the blocks that differ."""
    status = manager(url, token).post(f"/api/v1/groups/{name}/resync", {})
    print_one(status, json_output,
               f"group {name}: {status['state']} started; see `seawall group status {name}`")


# --- checkpoints -----------------------------------------------------------------------


@checkpoint_app.command("tag")
def checkpoint_tag(
    group: str, name: Annotated[str, typer.Option("--name", help="A label for it.")] = "",
    quiesce: Annotated[bool, typer.Option(
        "--quiesce", help="Freeze the guests' file systems around it (qemu-guest-agent): "
        "application-consistent, or crash-consistent with a note for a VM without one.")
    ] = False,
    url: UrlOption = None, token: TokenOption = None,
) -> None:
    """Insert a tagged checkpoint now; prints its id (and its consistency with --quiesce)."""
    tagged = manager(url, token).post(f"/api/v1/groups/{group}/checkpoints",
                                      {"name": name, "quiesce": quiesce})
    if not quiesce:
        print_line(str(tagged["id"]))
        return
    print_line(f"{tagged['id']} consistency: {tagged.get('consistency', 'crash')}")
    for note in tagged.get("notes", []):
        print_line(f"note: {note}")


@checkpoint_app.command("list")
def checkpoint_list(group: str, url: UrlOption = None, token: TokenOption = None,
                    json_output: JsonOption = False) -> None:
    """Checkpoints of a group, and whether each has reached the recovery site."""
    checkpoints = manager(url, token).get(f"/api/v1/groups/{group}/checkpoints")
    if json_output:
        print_json(checkpoints)
        return
    for checkpoint in checkpoints:
        checkpoint["time"] = time_text(checkpoint["time_ns"])
        checkpoint.setdefault("consistency", "crash")
    print_table(checkpoints, ["id", "time", "name", "replicated", "consistency"])


# --- exports ---------------------------------------------------------------------------


@app.command("export")
def export(
    group: Annotated[str | None, typer.Argument()] = None,
    volume: Annotated[str | None, typer.Argument()] = None,
    checkpoint: Annotated[str, typer.Option(help="A checkpoint id, or 'latest'.")] = "latest",
    stop: Annotated[str | None, typer.Option("--stop", help="End the export at URI.")] = None,
    list_all: Annotated[bool, typer.Option("--list", help="List exports.")] = False,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Export VOLUME of GROUP at a checkpoint as a read-only NBD image; prints its URI."""
    client = manager(url, token)
    if list_all:
        exports = client.get("/api/v1/exports")
        if json_output:
            print_json(exports)
        else:
            print_table(exports, ["group", "volume", "checkpoint_id", "uri"])
    elif stop:
        client.post("/api/v1/exports/stop", {"uri": stop})
        console.print("export stopped")
    elif group and volume:
        result = client.post("/api/v1/exports", {"group": group, "volume": volume,
                                                 "checkpoint": checkpoint})
        if json_output:
            print_json(result)
        else:
            print_line(result["uri"])
    else:
        raise InvalidInput("give GROUP VOLUME [--checkpoint ID], or --stop URI, or --list")


# --- processes and the demo ------------------------------------------------------------


@manager_app.command("run")
def manager_run(data: DataOption, log_format: LogFormatOption = None,
                tls_cert: TlsCertOption = None, tls_key: TlsKeyOption = None) -> None:
    """Run the site manager alone (its agent runs separately); SIGHUP: as `site run`."""
    from seawall.manager.runner import run_manager

    setup_logging(log_format)
    run_manager(_with_api_tls(site_config(data), tls_cert, tls_key))


@app.command("demo")
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the temporary directory.")] = False,
) -> None:
    """Two sites on localhost: protect, write, tag, export, verify byte for byte."""
    from seawall.demo import run_demo

    raise typer.Exit(run_demo(keep=keep))


def main() -> None:
    try:
        # Not standalone, typer returns the code of a typer.Exit (Ctrl-C: 130) rather
        # than raise it.
        exit_code = app(standalone_mode=False)
        if isinstance(exit_code, int):
            sys.exit(exit_code)
    except SeawallError as exc:
        console.print(styled("error:", "red"), exc.message)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: typer's click shows them itself
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            console.print(styled("error:", "red"), exc.format_message())
        sys.exit(exc.exit_code)
