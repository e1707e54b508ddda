"""Monitoring commands: ``group status|history``, ``alert list``, ``event list``, ``task list``.

Each asks one site manager (``--url``) and prints a table for people or, with ``--json``,
the manager's answer as it is. ``group status`` prints the group's status document
(``seawall.manager.monitoring.status``) as a summary, then its agent's own figures.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from seawall.cli.history import group_history
from seawall.cli.options import JsonOption, TokenOption, UrlOption, manager
from seawall.cli.output import console, print_json, print_table
from seawall.units import format_bytes

alert_app = typer.Typer(no_args_is_help=True, help="Alerts of this site (raised and cleared "
                        "by its monitor).")
event_app = typer.Typer(no_args_is_help=True, help="The log of operations asked of this site.")
task_app = typer.Typer(no_args_is_help=True, help="Long operations and their progress.")

GroupFilter = Annotated[str | None, typer.Option("--group", help="Only this group's.")]


def add_monitoring_commands(app: typer.Typer, group_app: typer.Typer) -> None:
    app.add_typer(alert_app, name="alert")
    app.add_typer(event_app, name="event")
    app.add_typer(task_app, name="task")
    group_app.command("status")(group_status)
    group_app.command("history")(group_history)


def group_status(name: str, url: UrlOption = None, token: TokenOption = None,
                 json_output: JsonOption = False) -> None:
    """State, RPO, history, throughput, buffer/journal use, sync progress and alerts."""
    document = manager(url, token).get(f"/api/v1/status/groups/{name}")
    if json_output:
        print_json(document)
        return
    print_table(summary_rows(document), ["field", "value"])
    agent = document["agent"] or {}
    rows = [{"field": f"agent.{key}", "value": value} for key, value in agent.items()
            if not isinstance(value, dict | list)]
    for key, value in agent.items():
        if isinstance(value, dict):  # sync progress, WAN facts: one row per field
            rows += [{"field": f"agent.{key}.{k}", "value": v} for k, v in value.items()]
    if rows:
        print_table(rows, ["field", "value"])
    if agent.get("members"):  # a group spanning agents: one row per member stream
        print_table(member_rows(agent["members"]),
                    ["agent", "stream", "volumes", "state", "coordination"])


def member_rows(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A spanning group's members as rows a person reads; pure."""
    rows = []
    for member in members:
        coordination = member.get("coordination") or {}
        if coordination.get("lead"):
            said = (f"lead: {coordination.get('rounds', 0)} rounds, "
                    f"{coordination.get('failed_rounds', 0)} failed")
            if coordination.get("last_error"):
                said += f" ({coordination['last_error']})"
        elif coordination:
            said = f"member: {coordination.get('hold_timeouts', 0)} holds ran out"
        else:
            said = "-"
        rows.append({"agent": member["agent"], "stream": member["group_id"],
                     "volumes": ", ".join(member["volumes"]),
                     "state": member.get("state") or "-", "coordination": said})
    return rows


def summary_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The status document as rows a person reads (units, ratios); pure."""
    rows = [("group", f"{document['group']} ({document['role']} at {document['site']}, "
                      f"peer {document['peer']}: {_reachable(document['peer_reachable'])})"),
            ("state", _join(document["state"], document["sub_state"]))]
    if not document["agent_reachable"]:
        rows.append(("agent", f"not answering: {document['agent_error']}"))
    rpo = document["rpo_s"]
    rows.append(("rpo", f"{'-' if rpo is None else f'{rpo:.1f} s'} "
                        f"(alert over {document['rpo_alert_s']:.0f} s)"))
    history = document["history"]
    covered = history["covered_s"]
    rows.append(("history", f"target {_hours(history['target_s'])}" if covered is None else
                 f"{_hours(covered)} of {_hours(history['target_s'])} "
                 f"({history['ratio']:.0%}){', short' if history['short'] else ''}"))
    throughput = document["throughput"]
    rates = [f"{label} {format_bytes(value)}/s" for label, value in (
        ("writes", throughput["write_bytes_per_s"]), ("sent", throughput["sent_bytes_per_s"]),
        ("received", throughput["received_bytes_per_s"])) if value is not None]
    rows.append(("throughput", ", ".join(rates) or "-"))
    if document["iops"] is not None:
        rows.append(("iops", f"{document['iops']:.0f}"))
    buffer = document["buffer"]
    if buffer is not None:
        rows.append(("buffer", f"{_of(buffer['used_bytes'], buffer['limit_bytes'])}, "
                               f"{format_bytes(buffer['dirty_bytes'])} dirty"))
    journal = document["journal"]
    if journal is not None:
        flags = [flag for flag in ("warning", "full") if journal[flag]]
        rows.append(("journal", _join(_of(journal["used_bytes"], journal["max_bytes"]),
                                      ", ".join(flags))))
    sync = document["sync"]
    if sync is not None:
        percent = "-" if sync["percent"] is None else f"{sync['percent']:.1f}%"
        rows.append(("sync", f"{sync['kind']} {sync['phase']}: {percent} "
                             f"({format_bytes(sync['done_bytes'])} of "
                             f"{format_bytes(sync['total_bytes'])}), eta {sync['eta_s']:.0f} s"))
    tests = document["tests"]
    if tests is not None:
        rows.append(("last passed test", tests["last_passed_at"] or "never"))
    for alert in document.get("alerts", []):
        rows.append((f"alert ({alert['severity']})", alert["message"]))
    return [{"field": field, "value": value} for field, value in rows]


def _join(first: str, second: str) -> str:
    return f"{first} ({second})" if second else first


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _of(used: int, limit: int | None) -> str:
    if not limit:
        return f"{format_bytes(used)} (no limit)"
    return f"{format_bytes(used)} of {format_bytes(limit)} ({used / limit:.0%})"


def _reachable(value: bool | None) -> str:
    return "not checked yet" if value is None else "reachable" if value else "UNREACHABLE"


@alert_app.command("list")
def alert_list(
    include_cleared: Annotated[bool, typer.Option("--all", help="Cleared alerts too.")] = False,
    group: GroupFilter = None,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Active alerts (errors first), and cleared ones with --all."""
    params: dict[str, Any] = {"all": include_cleared}
    if group is not None:
        params["group"] = group
    alerts = manager(url, token).get("/api/v1/alerts", **params)
    if json_output:
        print_json(alerts)
    elif not alerts:
        console.print("no alerts" if include_cleared else "no active alerts")
    else:
        print_table(alerts, ["severity", "id", "message", "since",
                             *(["cleared_at"] if include_cleared else [])])


@event_app.command("list")
def event_list(
    group: GroupFilter = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Operations asked of this site: when, who, what, on what, and how it ended."""
    params: dict[str, Any] = {"limit": limit}
    if group is not None:
        params["group"] = group
    events = manager(url, token).get("/api/v1/events", **params)
    if json_output:
        print_json(events)
        return
    for event in events:
        event["outcome"] = ("ok" if event["outcome"] == "ok"
                            else f"error {event['error_code']}")
    print_table(events, ["at", "user", "operation", "target", "outcome", "message"])


@task_app.command("list")
def task_list(
    include_finished: Annotated[bool, typer.Option(
        "--all", help="Finished recovery operations too.")] = False,
    url: UrlOption = None, token: TokenOption = None, json_output: JsonOption = False,
) -> None:
    """Syncs, clones and failover tests under way, with their progress."""
    tasks = manager(url, token).get("/api/v1/tasks", all=include_finished)
    if json_output:
        print_json(tasks)
        return
    if not tasks:
        console.print("no tasks under way")
        return
    for task in tasks:
        percent = task["progress_percent"]
        task["progress"] = "-" if percent is None else f"{percent:.1f}%"
        eta = task["eta_s"]
        task["eta"] = "-" if not eta else f"{eta:.0f} s"
    print_table(tasks, ["kind", "group", "state", "progress", "eta", "started_at", "detail"])
