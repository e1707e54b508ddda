"""``seawall group history NAME``: a group's RPO, throughput, IOPS and journal use over time.

It asks one site manager (``--url``) for ``GET /api/v1/groups/NAME/history`` and prints
one row per point (the newest last) or, with ``--json``, the manager's answer as it is.
Each site keeps its own half of a group's figures (``seawall.manager.monitoring.history``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from seawall.cli.options import JsonOption, TokenOption, UrlOption, manager
from seawall.cli.output import console, print_json, print_table
from seawall.units import format_bytes

RangeOption = Annotated[str, typer.Option(
    "--range", help="1h (5 s points), 24h (1 min points), 7d or 30d (1 h points).")]
COLUMNS = ["time", "rpo", "writes", "sent", "received", "iops", "journal"]


def group_history(name: str, range_name: RangeOption = "1h", url: UrlOption = None,
                  token: TokenOption = None, json_output: JsonOption = False) -> None:
    """RPO (worst per point), throughput, IOPS and journal use over a range."""
    answer = manager(url, token).get(f"/api/v1/groups/{name}/history", range=range_name)
    if json_output:
        print_json(answer)
        return
    if not answer["points"]:
        console.print(f"no history of group {name} yet (the monitor samples every round)")
        return
    print_table(history_rows(answer["points"]), COLUMNS)


def history_rows(points: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Points as rows a person reads (units; ``-`` where unknown); pure."""
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{format_bytes(value)}/s"

    rows = []
    for point in points:
        rpo, iops, used = point["rpo_s"], point["iops"], point["journal_used_bytes"]
        ratio = point["journal_ratio"]
        journal = "-" if used is None else format_bytes(used) + (
            f" ({ratio:.0%})" if ratio is not None else "")
        rows.append({
            "time": datetime.fromtimestamp(point["t"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "rpo": "-" if rpo is None else f"{rpo:.1f} s",
            "writes": rate(point["write_bytes_per_s"]),
            "sent": rate(point["sent_bytes_per_s"]),
            "received": rate(point["received_bytes_per_s"]),
            "iops": "-" if iops is None else f"{iops:.0f}", "journal": journal})
    return rows
