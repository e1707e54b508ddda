"""Recovery commands: ``failover test|stop|status``, ``clone``, ``report list|show``.

They talk to the recovery site's manager (``--url``; it records the authenticated user as
"who"), print tables for people and ``--json`` for scripts; a clone shows its progress on
stderr while the manager writes it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from seawall.cli.options import JsonOption, TokenOption, UrlOption, manager
from seawall.cli.output import console, print_json, print_table, progress, time_text
from seawall.errors import InvalidInput, SeawallError
from seawall.units import format_bytes, parse_size_bytes, parse_time

CLONE_POLL_S = 0.5
FINAL_STATES = ("done", "failed", "interrupted")

failover_app = typer.Typer(no_args_is_help=True, help="Failover tests and live failovers.")
report_app = typer.Typer(no_args_is_help=True, help="Recovery reports of this site.")

CheckpointOption = Annotated[str, typer.Option(
    help="A checkpoint id, 'latest' or 'latest-tagged' (newest with a name).")]
AtOption = Annotated[str | None, typer.Option(
    "--at", help="Instead of --checkpoint: the newest checkpoint at or before this time "
                 "(ISO 8601, local time unless a zone is given, or e.g. '10m ago').")]


def at_text(at: str | None) -> str | None:
    return parse_time(at).isoformat() if at else None


def add_recovery_commands(app: typer.Typer) -> None:
    app.add_typer(failover_app, name="failover")
    app.add_typer(report_app, name="report")
    app.command("clone")(clone)


class OperationFailed(SeawallError):
    """A recovery operation the manager ran ended failed or interrupted."""


# --- failover tests --------------------------------------------------------------------


@failover_app.command("test")
def failover_test(
    group: str,
    checkpoint: CheckpointOption = "latest",
    scratch_max: Annotated[str | None, typer.Option(
        "--scratch-max", help="Scratch space per volume for the test's writes (e.g. 2G); "
        "default 10% of the volume, at least 64M.")] = None,
    at: AtOption = None,
    network_map: Annotated[list[str] | None, typer.Option(
        "--network-map", help="KEY=NETWORK (repeatable): the VMs' NICs with that MAC, or "
        "on that network or bridge, go on NETWORK of the recovery host; the others on the "
        "group's test network.")] = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Writable images of every volume of GROUP at a checkpoint, over NBD, and its VMs
    booted from them; replication goes on."""
    test = manager(url, token).post(f"/api/v1/failover/{group}/test", {
        "checkpoint": checkpoint, "at": at_text(at),
        "scratch_max_bytes": parse_size_bytes(scratch_max) if scratch_max else None,
        "network_map": parse_network_map(network_map or [])})
    if json_output:
        print_json(test)
        return
    print_table(test["images"], ["volume", "uri"])
    print_vms(test)
    ready = test.get("vms_ready_s")
    vms_text = f", every VM ready in {ready:.3f} s" if ready is not None else ""
    console.print(f"failover test {test['id']} of group {group} at {checkpoint_text(test)}: "
                  f"every volume readable in {test['rto_s']:.3f} s{vms_text}; "
                  f"end it with `seawall failover stop {group} --result pass|fail`")
    if test.get("error"):
        console.print(f"warning: {test['error']}")


@failover_app.command("stop")
def failover_stop(
    group: str,
    result: Annotated[str | None, typer.Option(help="How the test went: pass or fail.")] = None,
    notes: Annotated[str, typer.Option(help="Notes for the report.")] = "",
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """End GROUP's failover test: discard its writes and write its report."""
    report = manager(url, token).post(f"/api/v1/failover/{group}/stop",
                               {"result": result, "notes": notes})
    if json_output:
        print_json(report)
    else:
        console.print(f"failover test of group {group} stopped; report {report['id']} "
                      f"(`seawall report show {report['id']}`)")


@failover_app.command("status")
def failover_status(group: str, url: UrlOption = None, token: TokenOption = None,
                    json_output: JsonOption = False) -> None:
    """GROUP's failover under way (test or live): images, scratch use, commit policy."""
    client = manager(url, token)
    status = client.get(f"/api/v1/failover/{group}")
    if status["operation"] is None:
        status = client.get(f"/api/v1/failover/{group}/live")
    if json_output:
        print_json(status)
        return
    operation = status["operation"]
    if operation is None:
        console.print(f"no failover of group {group} is under way")
        return
    console.print(f"{operation['kind']} {operation['id']} of group {group} is "
                  f"{operation['state']} at {checkpoint_text(operation)}, started "
                  f"{operation['started_at']} by {operation['user']}")
    if operation["kind"] != "failover-test":
        options = operation["options"]
        if options["commit_policy"] != "none":
            console.print(f"commit policy: {options['commit_policy']} at "
                          f"{operation['commit_deadline']}")
        print_table(operation.get("images", []), ["volume", "name", "uri"])
        return
    rows = [{**image, "scratch": f"{format_bytes(image['scratch_used_bytes'])} of "
                                 f"{format_bytes(image['scratch_limit_bytes'])}",
             "alert": "over 80%" if image["scratch_alert"] else ""}
            for image in operation.get("images", [])]
    print_table(rows, ["volume", "uri", "scratch", "alert"])


# --- clones ----------------------------------------------------------------------------


def clone(
    group: str,
    checkpoint: Annotated[str, typer.Option(
        help="A checkpoint id, 'latest' or 'latest-tagged'.")],
    to: Annotated[str, typer.Option(
        "--to", help="Directory for the image files, inside the recovery site's clone "
                     "directory: relative to it (e.g. app-monday), or absolute under it.")],
    image_format: Annotated[str, typer.Option("--format", help="raw or qcow2.")] = "raw",
    define: Annotated[bool, typer.Option(
        "--define", help="Also define each VM's definition at the recovery host's libvirt, "
        "shut off.")] = False,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Write standalone images of every volume of GROUP at a checkpoint, and a domain
    definition per VM pointing at them (protection goes on)."""
    client = manager(url, token)
    operation = client.post("/api/v1/clones", {
        "group": group, "checkpoint": checkpoint, "to": to,
        "format": image_format, "define": define})
    with progress() as bar:
        task = bar.add_task(f"clone of {group}", total=None)
        while operation["state"] not in FINAL_STATES:
            time.sleep(CLONE_POLL_S)
            operation = client.get(f"/api/v1/clones/{operation['id']}")
            done = operation.get("progress")
            if done is not None:
                bar.update(task, completed=done["done_bytes"], total=done["total_bytes"])
    if json_output:
        print_json(operation)
    if operation["state"] != "done":
        raise OperationFailed(f"clone {operation['id']} {operation['state']}: "
                              f"{operation['error']} (report {operation['id']})")
    if not json_output:
        print_table(operation["outputs"], ["volume", "path", "format"])
        definitions = operation.get("definitions", [])
        if definitions:
            print_table(definitions, ["vm", "domain", "path", "defined_uuid"])
        for definition in definitions:
            for note in definition.get("notes", []):
                console.print(f"VM {definition['vm']}: {note}")
            if definition.get("skipped"):
                console.print(f"VM {definition['vm']}: no definition: {definition['skipped']}")
        console.print(f"clone {operation['id']} of group {group} at "
                      f"{checkpoint_text(operation)} done; report {operation['id']}")


# --- reports ---------------------------------------------------------------------------


@report_app.command("list")
def report_list(url: UrlOption = None, token: TokenOption = None,
                json_output: JsonOption = False) -> None:
    """Recovery reports of this site, oldest first."""
    reports = manager(url, token).get("/api/v1/reports")
    if json_output:
        print_json(reports)
    else:
        print_table(reports, ["id", "kind", "group", "state", "result", "rto_s", "user",
                              "started_at"])


@report_app.command("show")
def report_show(
    report_id: Annotated[str, typer.Argument(metavar="ID")],
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write the report as a standalone HTML page to FILE.")] = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """One recovery report: summary and steps (or its JSON, or its HTML page)."""
    client = manager(url, token)
    report = client.get(f"/api/v1/reports/{report_id}")
    if html is not None:
        html.write_text(client.text(f"/api/v1/reports/{report_id}/html"))
        console.print(f"report {report_id} written to {html}")
    if json_output:
        print_json(report)
        return
    fields = ["kind", "group", "site", "state", "result", "user", "started_at", "ended_at",
              "rto_s", "error", "notes"]
    rows = [{"field": "checkpoint", "value": checkpoint_text(report)}]
    rows += [{"field": key, "value": report.get(key)} for key in fields]
    print_table(rows, ["field", "value"])
    print_table(report.get("steps", []), ["step", "at", "elapsed_s"])


def print_vms(operation: dict[str, Any]) -> None:
    """How the source VMs went down (live, move), and the VMs started here."""
    for vm in operation.get("source_vms", []):
        console.print(f"source VM {vm['vm']}: {vm['detail']}")
    if operation.get("vms"):
        print_table(operation["vms"], ["vm", "domain", "state", "started_s", "ready_s",
                                       "network", "console_log"])
        for vm in operation["vms"]:
            for note in vm.get("notes", []):
                console.print(f"VM {vm['vm']}: {note}")


def parse_network_map(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        key, equals, network = item.partition("=")
        if not (key and equals and network):
            raise InvalidInput(f"--network-map {item!r}: use KEY=NETWORK, KEY a NIC's MAC "
                               "or the network or bridge it was on (e.g. prod=dr-test)")
        if key in mapping:
            raise InvalidInput(f"--network-map maps {key} twice")
        mapping[key] = network
    return mapping


def checkpoint_text(operation: dict[str, Any]) -> str:
    checkpoint = operation["checkpoint"]
    name = f" '{checkpoint['name']}'" if checkpoint["name"] else ""
    return f"checkpoint {checkpoint['id']}{name} ({time_text(checkpoint['time_ns'])})"
