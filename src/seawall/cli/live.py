"""Live failover commands: ``failover live|commit|rollback``, ``move``, ``group reverse``.

They talk to the recovery site's manager (``--url``) — for ``group reverse`` and
``group unfence`` the site where the group was committed, or its protected site — and
print what happened for people, or ``--json`` for scripts.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from seawall.cli.options import JsonOption, TokenOption, UrlOption, manager
from seawall.cli.output import console, print_json, print_table, styled
from seawall.cli.recovery import (
    AtOption,
    CheckpointOption,
    at_text,
    checkpoint_text,
    parse_network_map,
    print_vms,
)
from seawall.units import parse_duration_s

NetworkMapOption = Annotated[list[str] | None, typer.Option(
    "--network-map", help="KEY=NETWORK (repeatable): the VMs' NICs with that MAC, or on that "
    "network or bridge, go on NETWORK of the recovery host; the others on the group's "
    "failover network (none set: the network of their name there).")]
ShutdownTimeoutOption = Annotated[str, typer.Option(
    "--shutdown-timeout", help="How long the source VMs may take to shut down cleanly "
    "(guest agent, else ACPI) before they are powered off.")]
OPERATION_DEADLINE_S = 4500.0
"""A live failover or move answers once its VMs are ready (a move: once committed), after
the source VMs' shutdown: a deadline beyond ``--shutdown-timeout`` and the commit's hour."""
ReverseOption = Annotated[bool, typer.Option(
    "--reverse-protect", help="After the commit, protect the group back to its old source "
                              "site (a delta sync against the old volumes).")]


def add_live_commands(failover_app: typer.Typer, app: typer.Typer,
                      group_app: typer.Typer) -> None:
    failover_app.command("live")(failover_live)
    failover_app.command("commit")(failover_commit)
    failover_app.command("rollback")(failover_rollback)
    app.command("move")(move)
    group_app.command("reverse")(group_reverse)
    group_app.command("unfence")(group_unfence)


def failover_live(
    group: str,
    checkpoint: CheckpointOption = "latest",
    at: AtOption = None,
    commit_policy: Annotated[str, typer.Option(
        help="What happens by itself after --commit-after: commit, rollback or none.")
    ] = "none",
    commit_after: Annotated[str, typer.Option(help="Delay of the commit policy.")] = "60m",
    shutdown_source: Annotated[bool, typer.Option(
        "--shutdown-source", help="First stop the protected site's volumes taking writes "
                                  "and ship the last ones: nothing is lost. The group's VMs "
                                  "are shut down first.")] = False,
    shutdown_timeout: ShutdownTimeoutOption = "5m",
    network_map: NetworkMapOption = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Fail GROUP over for real: writable images of its volumes at a checkpoint, here, and
    its VMs started from them."""
    shutdown_timeout_s = parse_duration_s(shutdown_timeout)
    operation = manager(url, token).post(f"/api/v1/failover/{group}/live", {
        "checkpoint": checkpoint, "at": at_text(at), "commit_policy": commit_policy,
        "commit_after_s": parse_duration_s(commit_after), "shutdown_source": shutdown_source,
        "shutdown_timeout_s": shutdown_timeout_s,
        "network_map": parse_network_map(network_map or [])},
        timeout_s=shutdown_timeout_s + OPERATION_DEADLINE_S)
    if json_output:
        print_json(operation)
        return
    print_table(operation["images"], ["volume", "name", "uri"])
    print_vms(operation)
    policy = ("" if commit_policy == "none"
              else f"; it will {commit_policy} by itself after {commit_after}")
    console.print(f"live failover {operation['id']} of group {group} at "
                  f"{checkpoint_text(operation)}: every volume readable in "
                  f"{operation['rto_s']:.3f} s{policy}. Then `seawall failover commit {group}` "
                  f"or `seawall failover rollback {group}`")


def failover_commit(
    group: str, reverse_protect: ReverseOption = False,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Make GROUP's live images its volumes here (journal + replica + writes, consolidated)."""
    report = manager(url, token).post(f"/api/v1/failover/{group}/commit",
                                      {"reverse_protect": reverse_protect})
    _print_final(report, json_output, f"live failover of group {group} committed: its volumes "
                                      "are now served by this site's agent")


def failover_rollback(group: str, url: UrlOption = None, token: TokenOption = None,
                      json_output: JsonOption = False) -> None:
    """Discard GROUP's live images and go back to protection as before."""
    report = manager(url, token).post(f"/api/v1/failover/{group}/rollback", {})
    _print_final(report, json_output, f"live failover of group {group} rolled back; "
                                      "replication resumes")


def move(
    group: str, reverse_protect: ReverseOption = False,
    shutdown_timeout: ShutdownTimeoutOption = "5m", network_map: NetworkMapOption = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Planned migration of GROUP here, losing nothing: shut its VMs down at the source,
    stop the source, fail over, start the VMs here, commit."""
    shutdown_timeout_s = parse_duration_s(shutdown_timeout)
    report = manager(url, token).post(f"/api/v1/move/{group}", {
        "reverse_protect": reverse_protect, "shutdown_timeout_s": shutdown_timeout_s,
        "network_map": parse_network_map(network_map or [])},
        timeout_s=shutdown_timeout_s + OPERATION_DEADLINE_S)
    _print_final(report, json_output, f"group {group} moved to this site")


def group_reverse(name: str, url: UrlOption = None, token: TokenOption = None,
                  json_output: JsonOption = False) -> None:
    """Protect a group committed at this site back to its old source site (delta sync)."""
    group = manager(url, token).post(f"/api/v1/groups/{name}/reverse", {})
    if json_output:
        print_json(group)
    else:
        console.print(f"group {name} is protected from this site to {group['peer']}; the "
                      "first sync compares with the old volumes there "
                      f"(`seawall group status {name}`)")


def group_unfence(name: str, url: UrlOption = None, token: TokenOption = None,
                  json_output: JsonOption = False) -> None:
    """Let GROUP's volumes take writes again after a failover stopped them (--shutdown-source)."""
    status = manager(url, token).post(f"/api/v1/groups/{name}/unfence", {})
    if json_output:
        print_json(status)
    else:
        console.print(f"group {name}'s volumes take writes again ({status['state']})")


def _print_final(report: dict[str, Any], json_output: bool, text: str) -> None:
    if json_output:
        print_json(report)
        return
    if report.get("images"):
        print_table(report["images"], ["volume", "name", "uri"])
    print_vms(report)
    console.print(f"{text}; report {report['id']} (`seawall report show {report['id']}`)")
    if report.get("error"):
        console.print(styled("warning:", "yellow"), report["error"])
    if report.get("reverse"):
        console.print(f"reverse protection to {report['reverse']['peer']} started")

