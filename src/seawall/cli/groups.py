"""``seawall group create/update/show``: a group and its settings.

The settings options are the same for ``create`` and ``update``; an option not given is not
sent (``create``: the manager's default; ``update``: unchanged). ``none`` clears an optional
setting (journal limit, networks, scripts, boot order). Ranges are checked by the manager.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from seawall.cli.options import JsonOption, TokenOption, UrlOption, manager
from seawall.cli.output import console, print_json, print_line
from seawall.errors import InvalidInput
from seawall.manager.groups.options_text import settings_body
from seawall.units import format_bytes

Opt = typer.Option
IntervalOption = Annotated[str | None, Opt(
    "--checkpoint-interval", help="Periodic checkpoints, 100ms to 1h (default 5s).")]
HistoryOption = Annotated[str | None, Opt(help="Journal history, 1h to 30d (default 24h).")]
JournalMaxOption = Annotated[str | None, Opt(
    "--journal-max", help="Hard limit of the recovery journal (e.g. 50G), or none (default).")]
JournalWarningOption = Annotated[str | None, Opt(
    "--journal-warning", help="Warn when the journal holds this share of its limit "
    "(e.g. 80%), 10% to 100% (default 75%).")]
PriorityOption = Annotated[str | None, Opt(
    help="Share of the site's throttled bandwidth: high, medium (default) or low (4:2:1).")]
CompressionOption = Annotated[str | None, Opt(
    help="zstd (default; level adapts to the CPU), lz4 or none.")]
RpoAlertOption = Annotated[str | None, Opt(
    "--rpo-alert", help="Alert when the RPO is over this, 1s to 7d (default 5m).")]
TestReminderOption = Annotated[str | None, Opt(
    "--test-reminder", help="Alert when no failover test passed for this long, 1h to 365d "
    "(default 30d).")]
RecoveryAgentOption = Annotated[str | None, Opt(
    "--recovery-agent", help="The recovery site's agent; a site has one today, named after "
    "the site (the default).")]
StorageOption = Annotated[str | None, Opt(
    "--storage", help="Directory at the recovery site for the journal and replicas "
    "(default: its data dir), inside its data dir or a --storage-root it allows; set at "
    "create only.")]
FailoverNetworkOption = Annotated[str | None, Opt(
    "--failover-network", help="Network of recovered VMs in a live failover, or none.")]
TestNetworkOption = Annotated[str | None, Opt(
    "--test-network", help="Isolated network of VMs in a failover test, or none.")]
BootOrderOption = Annotated[str | None, Opt(
    "--boot-order", help="NAME[:DELAY],... in boot order, each then waited for DELAY "
    "(e.g. db:30s,app); or none.")]
PreScriptOption = Annotated[str | None, Opt(
    "--pre-script", help="Name of a script in the recovery site's scripts directory "
    "(e.g. pre.sh), run before a failover's images are made; or none.")]
PostScriptOption = Annotated[str | None, Opt(
    "--post-script", help="Name of a script in the recovery site's scripts directory, "
    "run once a failover's images are up; or none.")]
ScriptTimeoutOption = Annotated[str | None, Opt(
    "--script-timeout", help="Time allowed to each script, 1s to 1h (default 5m).")]
QuiesceEveryOption = Annotated[str | None, Opt(
    "--quiesce-every", help="Take an application-consistent checkpoint (guests frozen "
    "through qemu-guest-agent) this often, 1m to 1d; or none (the default).")]


def add_group_commands(group_app: typer.Typer) -> None:
    group_app.command("create")(group_create)
    group_app.command("update")(group_update)
    group_app.command("show")(group_show)
    group_app.command("delete")(group_delete)


def group_create(
    name: str,
    to: Annotated[str, Opt("--to", help="Name of the paired recovery site.")],
    volume: Annotated[list[str] | None, Opt("--volume", help="A volume (repeatable).")] = None,
    vm: Annotated[list[str] | None, Opt(
        "--vm", help="A VM (name or uuid, see `seawall vm list`) whose disks the group "
        "protects, live, wherever it runs among the site's agents (repeatable).")] = None,
    preseed: Annotated[list[str] | None, Opt(
        "--preseed", help="VOLUME=PATH (or PATH for a one-volume group): a copy of the volume "
        "in a file at the recovery site (in its data dir or a --storage-root it allows), "
        "e.g. restored from a backup; it becomes the replica and only blocks that differ "
        "are sent (repeatable).")] = None,
    checkpoint_interval: IntervalOption = None, history: HistoryOption = None,
    journal_max: JournalMaxOption = None, journal_warning: JournalWarningOption = None,
    priority: PriorityOption = None, compression: CompressionOption = None,
    rpo_alert: RpoAlertOption = None, test_reminder: TestReminderOption = None,
    recovery_agent: RecoveryAgentOption = None, storage: StorageOption = None,
    failover_network: FailoverNetworkOption = None, test_network: TestNetworkOption = None,
    boot_order: BootOrderOption = None, pre_script: PreScriptOption = None,
    post_script: PostScriptOption = None, script_timeout: ScriptTimeoutOption = None,
    quiesce_every: QuiesceEveryOption = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Protect volumes and VMs of this site to a paired site."""
    body = settings_body(
        checkpoint_interval=checkpoint_interval, history=history, journal_max=journal_max,
        journal_warning=journal_warning, priority=priority, compression=compression,
        rpo_alert=rpo_alert, test_reminder=test_reminder, recovery_agent=recovery_agent,
        storage=storage, failover_network=failover_network, test_network=test_network,
        boot_order=boot_order, pre_script=pre_script, post_script=post_script,
        script_timeout=script_timeout, quiesce_every=quiesce_every)
    group = manager(url, token).post("/api/v1/groups", {
        "name": name, "volumes": volume or [], "vms": vm or [], "to": to, **body,
        "preseed": _preseed_paths(preseed or [], volume or [])})
    if json_output:
        print_json(group)
        return
    console.print(f"group {name} created; initial sync to {to} started")
    for warning in group.get("warnings", []):
        console.print(f"warning: {warning}", markup=False, highlight=False)


def _preseed_paths(values: list[str], volumes: list[str]) -> dict[str, str]:
    paths: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            if len(volumes) != 1:
                raise InvalidInput("with several volumes, give --preseed as VOLUME=PATH")
            name, path = volumes[0], value
        paths[name] = path
    return paths


def group_update(
    name: str,
    checkpoint_interval: IntervalOption = None, history: HistoryOption = None,
    journal_max: JournalMaxOption = None, journal_warning: JournalWarningOption = None,
    priority: PriorityOption = None, compression: CompressionOption = None,
    rpo_alert: RpoAlertOption = None, test_reminder: TestReminderOption = None,
    recovery_agent: RecoveryAgentOption = None, storage: StorageOption = None,
    failover_network: FailoverNetworkOption = None, test_network: TestNetworkOption = None,
    boot_order: BootOrderOption = None, pre_script: PreScriptOption = None,
    post_script: PostScriptOption = None, script_timeout: ScriptTimeoutOption = None,
    quiesce_every: QuiesceEveryOption = None,
    add_volume: Annotated[list[str] | None, Opt(
        "--add-volume", help="A volume to protect in the group from now on, after its "
        "initial sync (repeatable).")] = None,
    remove_volume: Annotated[list[str] | None, Opt(
        "--remove-volume", help="A volume to stop protecting; its history at the recovery "
        "site stays readable until it ages out (repeatable).")] = None,
    add_vm: Annotated[list[str] | None, Opt(
        "--add-vm", help="A VM whose disks to protect from now on, live (repeatable).")] = None,
    remove_vm: Annotated[list[str] | None, Opt(
        "--remove-vm", help="A VM to stop protecting: its mirrors end, it keeps running; "
        "its history stays readable until it ages out (repeatable).")] = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Change settings, volumes or VMs of a group (at its protected site; both sites follow;
    settings need no resync, a new volume gets its initial sync)."""
    body = settings_body(
        checkpoint_interval=checkpoint_interval, history=history, journal_max=journal_max,
        journal_warning=journal_warning, priority=priority, compression=compression,
        rpo_alert=rpo_alert, test_reminder=test_reminder, recovery_agent=recovery_agent,
        storage=storage, failover_network=failover_network, test_network=test_network,
        boot_order=boot_order, pre_script=pre_script, post_script=post_script,
        script_timeout=script_timeout, quiesce_every=quiesce_every)
    members_change = {"add": add_volume or [], "remove": remove_volume or [],
                      "add_vms": add_vm or [], "remove_vms": remove_vm or []}
    if not body and not any(members_change.values()):
        raise InvalidInput("nothing to change: give at least one setting or --add-volume / "
                           "--remove-volume / --add-vm / --remove-vm (see --help)")
    client = manager(url, token)
    if any(members_change.values()):
        members = client.request("PATCH", f"/api/v1/groups/{name}/volumes", members_change)
        if not body:
            _print_members(name, members, json_output)
            return
        if not json_output:
            _print_members(name, members, json_output)
    result = client.request("PATCH", f"/api/v1/groups/{name}/settings", body)
    if json_output:
        print_json(result)
        return
    changed = result["changed"]
    if not changed:
        console.print(f"group {name}: nothing changed")
    for field, (old, new) in sorted(changed.items()):
        console.print(f"{field}: {_text(field, old)} -> {_text(field, new)}")


def _print_members(name: str, result: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(result)
        return
    for volume in result["added"]:
        console.print(f"group {name}: volume {volume} added; its initial sync runs (no "
                      "checkpoint until it ends)")
    for volume in result["removed"]:
        console.print(f"group {name}: volume {volume} removed; its history at "
                      f"{result['peer']} stays readable until it ages out")
    for vm in result.get("added_vms", []):
        console.print(f"group {name}: VM {vm} added; its mirrors' full copies are its "
                      "initial sync", markup=False, highlight=False)
    for vm in result.get("removed_vms", []):
        console.print(f"group {name}: VM {vm} removed; its mirrors ended, it runs on",
                      markup=False, highlight=False)
    for warning in result.get("warnings", []):
        console.print(f"warning: {warning}", markup=False, highlight=False)


def group_delete(
    name: str,
    keep_replicas: Annotated[bool, Opt(
        "--keep-replicas", help="Keep each volume's replica at the recovery site as a plain "
        "raw file, consistent at the newest checkpoint (the output names each path).")] = False,
    yes: Annotated[bool, Opt("--yes", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Stop protecting a group and delete it at both sites, with its journal and replicas
    (admin; refused while a failover test or live failover of it runs)."""
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput(f"deleting group {name} removes its journal"
                               f"{'' if keep_replicas else ' and replicas'} at the recovery "
                               "site: give --yes to confirm")
        typer.confirm(f"Delete group {name} and its journal"
                      f"{'' if keep_replicas else ' and replicas'} at the recovery site?",
                      abort=True)
    result = manager(url, token).request(
        "DELETE", f"/api/v1/groups/{name}",
        params={"keep_replicas": "true"} if keep_replicas else None)
    if json_output:
        print_json(result)
        return
    console.print(f"group {name} deleted: no longer protected here, removed at "
                  f"{result['recovery_site']}")
    if result["kept_replicas"]:
        checkpoint = result["checkpoint"]
        at = (f"consistent at checkpoint {checkpoint}" if checkpoint is not None
              else "as replicated (there was no consistent checkpoint)")
        console.print(f"replicas kept at {result['recovery_site']} as raw files, {at}:")
        for volume, path in sorted(result["kept_replicas"].items()):
            print_line(f"  {volume}: {path}")


def group_show(name: str, url: UrlOption = None, token: TokenOption = None,
               json_output: JsonOption = False) -> None:
    """A group and all its settings."""
    group = manager(url, token).get(f"/api/v1/groups/{name}/settings")
    if json_output:
        print_json(group)
        return
    volumes = ", ".join(v["name"] for v in group["volumes"])
    print_line(f"group {group['name']} ({group['role']}, peer {group['peer']}, recovery site "
               f"{group['recovery_site']}); volumes: {volumes}")
    for field, value in group["settings"].items():
        print_line(f"  {field:24} {_text(field, value)}")
    for vm in group.get("vms", []):
        disks = ", ".join(f"{disk} -> {volume}" for disk, volume in sorted(vm["volumes"].items()))
        where = f"on {vm['agent']}" if vm["found"] else f"not found on {vm['agent']}"
        print_line(f"  VM {vm['name'] or vm['uuid']} ({where}): {disks}")
        for skipped in vm["skipped"]:
            print_line(f"    warning: disk {skipped['disk']} not protected: {skipped['reason']}")


def _text(field: str, value: Any) -> str:
    if value is None:
        return "default" if field in ("recovery_agent", "storage_path") else "none"
    if field == "journal_max_bytes":
        return format_bytes(value)
    if field == "journal_warning_ratio":
        return f"{value:.0%}"
    if field == "boot_order":
        return ", ".join(f"{s['name']}:{s['delay_s']:g}s" for s in value) or "none"
    if field.endswith("_s"):
        return f"{value:g} s"
    return str(value)
