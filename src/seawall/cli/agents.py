"""``seawall agent run|token|list|remove``: the site's agents, its own and other hosts'.

``agent run --data DIR`` runs the agent DIR holds: the site's own (``site run`` starts it)
or one that joined a site from another host. Its first run on another host joins: with
``--manager URL --token TOKEN --name NAME --control HOST:PORT`` and a DIR without a
configuration (``seawall.agent.joining``); the options of the join are refused later. The
join token may come from standard input (``--token -``), a file (``--token-file``) or
``SEAWALL_JOIN_TOKEN`` (``cli.options.secret``); the environment is read at the join only,
so a service that keeps it set still restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seawall.cli.options import (
    DataOption,
    HypervisorOption,
    JsonOption,
    LogFormatOption,
    MetricsOption,
    SocketGroupOption,
    ThrottleOption,
    TokenOption,
    UrlOption,
    manager,
    manager_url,
    secret,
)
from seawall.cli.output import console, print_json, print_line, print_table
from seawall.config import CONFIG_NAME, SiteConfig, parse_host_port
from seawall.errors import Conflict, InvalidInput
from seawall.local_access import enter_private_umask
from seawall.observability.logs import setup_logging
from seawall.units import parse_duration_s, parse_size_bytes
from seawall.wan.schedule import parse_rate_bytes_per_s

JOIN_HINT = "--data DIR --name NAME --control HOST:PORT"


def add_agent_commands(agent_app: typer.Typer) -> None:
    agent_app.command("run")(agent_run)
    agent_app.command("token")(agent_token)
    agent_app.command("list")(agent_list)
    agent_app.command("remove")(agent_remove)


def site_config(data: Path) -> SiteConfig:
    """The site in ``data``, for ``site run``/``manager run``: not a joined agent's DIR.

    These are service processes: from here on what they make is private to their user."""
    enter_private_umask()
    config = SiteConfig.load(data)
    if config.agent_id is not None:
        raise InvalidInput(f"{data} holds agent {config.agent_name} of site {config.name}, "
                           f"not a site: run it with `seawall agent run --data {data}`")
    return config


def agent_run(
    data: DataOption,
    manager_option: Annotated[str | None, typer.Option(
        "--manager", help="First run on another host: the site manager's URL.")] = None,
    token: Annotated[str | None, typer.Option(
        help="First run: the join token (`seawall agent token` at the manager); '-': read "
             "it from standard input (or SEAWALL_JOIN_TOKEN, or a file named by "
             "SEAWALL_JOIN_TOKEN_FILE).", show_default=False)] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="First run: read the join token from this file.")] = None,
    name: Annotated[str | None, typer.Option(
        help="First run: this agent's name in the site.")] = None,
    control: Annotated[str | None, typer.Option(
        help="First run: HOST:PORT of the control API (mutual TLS, for the manager).")
    ] = None,
    advertise_control: Annotated[str | None, typer.Option(
        help="First run: HOST:PORT the manager connects to, if not --control (NAT).")] = None,
    replication: Annotated[str | None, typer.Option(
        help="First run: HOST:PORT where replication is received; default: the --control "
             "host, its port + 1.")] = None,
    nbd_tcp: Annotated[str | None, typer.Option(
        help="First run: also serve volumes over NBD on this TCP HOST:PORT, with TLS and "
             "client certificates (`seawall volume client-cert`).")] = None,
    nbd_tcp_plain: Annotated[bool, typer.Option(
        "--nbd-tcp-plain", help="First run: NBD on TCP without TLS (loopback --nbd-tcp "
                                "only).")] = False,
    buffer: Annotated[str | None, typer.Option(
        help="Memory for unsent writes (default: the site's --buffer, or 512M).")] = None,
    throttle: ThrottleOption = None,
    metrics: MetricsOption = None,
    socket_group: SocketGroupOption = None,
    hypervisor: HypervisorOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run the agent in DATA: the site's own, or one that joins a site from another host."""
    from seawall.agent.main import run_agent

    enter_private_umask()
    overrides: dict[str, object] = {}
    if buffer is not None:
        overrides["buffer_bytes"] = parse_size_bytes(buffer)
    if throttle is not None:
        overrides["throttle_bytes_per_s"] = parse_rate_bytes_per_s(throttle)
    if metrics is not None:
        overrides["metrics_host"], overrides["metrics_port"] = parse_host_port(metrics)
    if socket_group is not None:
        overrides["socket_group"] = None if socket_group == "none" else socket_group
    if hypervisor is not None:
        overrides["hypervisor"] = hypervisor
    join_options = {"--manager": manager_option, "--token": token, "--name": name,
                    "--control": control, "--advertise-control": advertise_control,
                    "--replication": replication, "--nbd-tcp": nbd_tcp,
                    "--nbd-tcp-plain": "yes" if nbd_tcp_plain else None}
    if (data.resolve() / CONFIG_NAME).exists():
        given = [option for option, value in join_options.items() if value is not None]
        if token is not None or token_file is not None or manager_option is not None:
            raise Conflict(f"{data} has joined a site already (or holds one): nothing changed; "
                           f"run it with `seawall agent run --data {data}`, no --token")
        if given:
            raise InvalidInput(f"{', '.join(given)}: only at the first run, when the agent "
                               "joins; they are kept in its directory")
        config = SiteConfig.load(data).with_overrides(**overrides)
    else:
        join_options["--token"] = secret(token, token_file, "SEAWALL_JOIN_TOKEN", "join token")
        missing = [option for option in ("--manager", "--token", "--name", "--control")
                   if join_options[option] is None]
        if missing:
            raise InvalidInput(f"{data} holds no agent: to join a site give --manager URL "
                               f"--token TOKEN --name NAME --control HOST:PORT (missing: "
                               f"{', '.join(missing)})")
        config = _join(data, join_options, overrides)
    setup_logging(log_format)
    run_agent(config)


def _join(data: Path, options: dict[str, str | None], settings: dict[str, object]) -> SiteConfig:
    from seawall.agent.joining import join_site

    assert options["--manager"] and options["--token"] and options["--name"]
    assert options["--control"]
    config = join_site(options["--manager"], options["--token"], data, options["--name"],
                       options["--control"], options["--advertise-control"],
                       options["--replication"], options["--nbd-tcp"], settings,
                       nbd_tcp_plain=options["--nbd-tcp-plain"] is not None)
    console.print(f"joined site {config.name} as agent {config.agent_name} "
                  f"(id {config.agent_id}); certificate fingerprint (sha256): "
                  f"{config.identity().fingerprint}")
    console.print(f"next runs: seawall agent run --data {config.data_dir}")
    return config


def agent_token(
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime of the token, e.g. 1h, 30m.")] = "1h",
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Print a single-use token for an agent on another host to join this site."""
    result = manager(url, token).post("/api/v1/agents/token",
                                      {"ttl_s": parse_duration_s(ttl)})
    command = f"seawall agent run --manager {manager_url(url)} --token - {JOIN_HINT}"
    if json_output:
        print_json({**result, "command": command})
        return
    print_line(result["token"])
    console.print(f"single use, valid until {result['expires_at']}; on the other host run "
                  "this, which asks for it (or --token-file PATH, SEAWALL_JOIN_TOKEN):")
    console.print(command, highlight=False, soft_wrap=True)


def agent_list(url: UrlOption = None, token: TokenOption = None,
               json_output: JsonOption = False) -> None:
    """List the site's agents (its own first), whether each answers, and its volumes."""
    agents = manager(url, token).get("/api/v1/agents")
    if json_output:
        print_json(agents)
        return
    for agent in agents:
        agent["kind"] = "local" if agent["local"] else "joined"
    columns = ["name", "kind", "control_url", "joined_at", "reachable", "volumes"]
    print_table(agents, [*columns, "error"] if any(a["error"] for a in agents) else columns)


def agent_remove(name: Annotated[str, typer.Argument(help="The agent's name.")],
                 url: UrlOption = None, token: TokenOption = None) -> None:
    """Forget an agent that joined from another host (refused while groups use it)."""
    manager(url, token).delete(f"/api/v1/agents/{name}")
    console.print(f"agent {name} removed from the site; it still runs on its host "
                  "with its volumes: stop it there")
