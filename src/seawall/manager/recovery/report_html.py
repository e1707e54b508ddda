"""A recovery report as one standalone HTML page (pure: a report dict in, a string out).

Rules: every value from the report goes through ``html.escape`` (names, notes and errors
are typed by users or come from peers); the page uses inline CSS only, no scripts, fonts
or images, so it reads the same offline, archived or mailed. The web console shows the
same body (``report_body``) inside its own page, styled by its own sheet.
"""

from __future__ import annotations

import html
from typing import Any

TITLES = {"failover-test": "Failover test", "clone": "Clone"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd;
         vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass, .done, .stopped { color: #176f2c; } .fail, .failed, .interrupted { color: #a4161a; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: .6em; }
footer { margin-top: 2em; color: #777; font-size: .85em; }
"""


def _text(value: Any) -> str:
    if value is None or value == "":
        return "—"
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_text(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f} s"


def render_html(report: dict[str, Any]) -> str:
    """The standalone page: ``report_body`` with its own inline style."""
    title = f"{_kind(report)} of group {report.get('group')}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)} — Seawall recovery report</title>"
        f"<style>{STYLE}</style></head><body>" + report_body(report) + "</body></html>\n"
    )


def _kind(report: dict[str, Any]) -> str:
    return TITLES.get(report.get("kind", ""), str(report.get("kind")))


def report_body(report: dict[str, Any]) -> str:
    """The report's title, sections and footer, to stand in a page of its own or inside
    the web console's (which styles it with its own sheet: its CSP allows no inline style)."""
    kind = _kind(report)
    checkpoint = report.get("checkpoint") or {}
    state, result = report.get("state"), report.get("result")
    if not result and report.get("kind") == "failover-test":
        result = "not given"
    summary: list[tuple[str, Any]] = [
        ("Group", report.get("group")),
        ("Site", report.get("site")),
        ("Checkpoint", f"{checkpoint.get('id')} — {checkpoint.get('time')}"
                       + (f" — “{checkpoint['name']}”" if checkpoint.get("name") else "")),
        ("Who", report.get("user")),
        ("Started", report.get("started_at")),
        ("Ended", report.get("ended_at")),
        ("Duration", _seconds(report.get("duration_s"))),
        ("Outcome", state),
        ("Result", result),
        ("RTO (command to every volume readable)", _seconds(report.get("rto_s"))),
    ]
    if report.get("vms"):
        summary.append(("RTO (command to every VM ready)",
                        _seconds(report.get("vms_ready_s")) or "not every VM was ready"))
    summary_rows = "".join(
        f"<tr><th>{html.escape(label)}</th>"
        f"<td class=\"{html.escape(str(value or ''))}\">{_text(value)}</td></tr>"
        if label in ("Outcome", "Result") else
        f"<tr><th>{html.escape(label)}</th><td>{_text(value)}</td></tr>"
        for label, value in summary)
    steps = _table(["Step", "At", "Since start"],
                   [[s.get("step"), s.get("at"), _seconds(s.get("elapsed_s"))]
                    for s in report.get("steps", [])])
    sections = [f"<h2>Summary</h2><table>{summary_rows}</table>", f"<h2>Steps</h2>{steps}"]
    images = report.get("images") or []
    if images:
        sections.append("<h2>Images</h2>" + _table(
            ["Volume", "NBD URI", "Size (bytes)", "Scratch used (bytes)", "Scratch limit"],
            [[i.get("volume"), i.get("uri"), i.get("size_bytes"), i.get("scratch_used_bytes"),
              i.get("scratch_limit_bytes")] for i in images]))
    vms = report.get("vms") or []
    if vms:
        sections.append("<h2>VMs</h2>" + _table(
            ["VM", "Domain", "State", "Started", "Ready", "Network", "Console log", "Notes"],
            [[v.get("vm"), v.get("domain"), v.get("state"), _seconds(v.get("started_s")),
              _seconds(v.get("ready_s")), v.get("network"), v.get("console_log"),
              "; ".join([*v.get("notes", []), *([v["error"]] if v.get("error") else [])])]
             for v in vms]))
    definitions = report.get("definitions") or []
    if definitions:
        sections.append("<h2>VM definitions</h2>" + _table(
            ["VM", "Domain", "File", "Defined (uuid)", "Notes"],
            [[d.get("vm"), d.get("domain"), d.get("path"), d.get("defined_uuid"),
              "; ".join([*d.get("notes", []), *([d["skipped"]] if d.get("skipped") else [])])]
             for d in definitions]))
    outputs = report.get("outputs") or []
    if outputs:
        sections.append("<h2>Images written</h2>" + _table(
            ["Volume", "File", "Format", "Size (bytes)"],
            [[o.get("volume"), o.get("path"), o.get("format"), o.get("size_bytes")]
             for o in outputs]))
    scripts = report.get("scripts") or {}
    if scripts:
        sections.append("<h2>Recovery scripts</h2>" + _table(
            ["Stage", "Script", "Exit code", "Duration", "Problem", "Output (its end)"],
            [[stage, run.get("path"), run.get("exit_code"), _seconds(run.get("duration_s")),
              run.get("error"), run.get("output")] for stage, run in scripts.items()]))
    if report.get("error"):
        sections.append(f"<h2>Error</h2><pre>{_text(report['error'])}</pre>")
    sections.append(f"<h2>Notes</h2><pre>{_text(report.get('notes'))}</pre>")
    title = f"{kind} of group {report.get('group')}"
    return (f"<h1>{html.escape(title)}</h1><p>Recovery report {_text(report.get('id'))}</p>"
            + "".join(sections)
            + f"<footer>Seawall {_text(report.get('seawall_version'))}</footer>")
