"""``seawall vm list``: the VMs of the site's hosts, as their agents' hypervisors see them;
``seawall vm show``: a protected VM's configuration at a checkpoint (recovery site's).

Rules: the manager gathers every agent's answer (``seawall.manager.vms``); here a VM is
one table row, its disks and its NICs each a list in one cell (``; `` between them: a
newline would be escaped like any control character), every name escaped by
``cli.output``. An agent without a hypervisor, or whose agent or hypervisor does not
answer, is said so, not shown as a host without VMs. ``vm show --xml`` writes the
definition verbatim (for ``virsh define``): it is XML or JSON, which hold no control
characters but newlines and tabs.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any
from urllib.parse import quote

import typer

from seawall.cli.options import JsonOption, TokenOption, UrlOption, manager
from seawall.cli.output import console, print_json, print_line, print_table, time_text
from seawall.units import format_bytes


def add_vm_commands(app: typer.Typer) -> None:
    vm_app = typer.Typer(no_args_is_help=True, help="VMs of the site's hosts (hypervisors).")
    vm_app.command("list")(vm_list)
    vm_app.command("show")(vm_show)
    app.add_typer(vm_app, name="vm")


def vm_list(
    agent: Annotated[str | None, typer.Option(
        "--agent", help="Only this agent's VMs (`seawall agent list`); default: every agent's."
    )] = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """List every VM of every agent: state, disks, NICs and the group protecting it."""
    rows = manager(url, token).get("/api/v1/vms", **({"agent": agent} if agent else {}))
    if json_output:
        print_json(rows)
        return
    vms = [{**row, "disks": _disks_text(row["disks"]), "nics": _nics_text(row["nics"])}
           for row in rows if row.get("name") is not None]
    silent = [row for row in rows if row.get("error")]
    columns = ["agent", "name", "uuid", "state", "group", "disks", "nics"]
    if vms or silent:
        print_table(vms + silent, [*columns, "error"] if silent else columns)
    for row in rows:
        if row.get("mirror_problem"):
            console.print(f"warning: {row['mirror_problem']}",
                          markup=False, highlight=False)
        if row.get("name") is None and row.get("hypervisor") == "none":
            console.print(f"agent {row['agent']} has no hypervisor (run it with "
                          "--hypervisor libvirt[:URI] or qmp:DIR to list its VMs)")


def _disks_text(disks: list[dict[str, Any]]) -> str:
    lines = []
    for disk in disks:
        line = (f"{disk['target']} {disk['source'] or '(empty)'} {disk['format']} "
                f"{format_bytes(disk['size_bytes'])}")
        if disk.get("skip_reason"):
            line += f" [not mirrored: {disk['skip_reason']}]"
        lines.append(line)
    return "; ".join(lines) or "-"


def _nics_text(nics: list[dict[str, Any]]) -> str:
    return "; ".join(f"{nic['kind']} {nic['source'] or '-'} {nic['mac']} {nic['model'] or '-'}"
                     for nic in nics) or "-"


def vm_show(
    group: Annotated[str, typer.Argument(help="The protection group holding the VM's disks.")],
    vm: Annotated[str, typer.Argument(help="The VM's name or uuid.")],
    checkpoint: Annotated[str, typer.Option(
        "--checkpoint", help="A checkpoint id, or latest (the newest consistent one).")
    ] = "latest",
    xml: Annotated[bool, typer.Option(
        "--xml", help="Print the definition verbatim (libvirt domain XML; JSON for QMP).")
    ] = False,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Show a protected VM as configured at a checkpoint: the configuration captured last at
    or before it, its disks (and the group volume holding each) and its NICs."""
    shown = manager(url, token).get(
        f"/api/v1/groups/{quote(group, safe='')}/vms/{quote(vm, safe='')}",
        checkpoint=checkpoint)
    if json_output:
        print_json(shown)
        return
    if xml:
        sys.stdout.write(shown["definition"].rstrip("\n") + "\n")
        return
    print_line(f"VM {shown['name']} ({shown['uuid']}) at checkpoint {shown['checkpoint']}"
               + (f" ({shown['checkpoint_name']})" if shown["checkpoint_name"] else ""))
    print_line(f"configuration captured {time_text(shown['config_time_ns'])} "
               f"(seq {shown['config_seq']}, {shown['format']})")
    print_table([{**disk, "volume": disk["volume"] or "(not protected)"}
                 for disk in shown["disks"]], ["target", "volume", "source", "format"])
    if shown["nics"]:
        print_table(shown["nics"], ["kind", "source", "mac", "model"])
