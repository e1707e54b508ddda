"""How the CLI prints: JSON for scripts (``--json``), tables and lines of text for people.

Rules:
- Everything a person reads goes through here: ``console`` (messages, stderr),
  ``print_line`` and ``print_table`` (stdout), ``progress`` (stderr). Names come from users,
  peers and guests' file systems, so every string is printed as text, never as rich markup
  (``[bold]x[/]`` prints as typed, and ``[/nope]`` cannot make a listing fail with
  MarkupError), with every control or format character escaped (``seawall.names.visible``:
  ESC is shown as ``\\x1b``, U+202E as ``\\u202e``), so no name moves the cursor, clears the
  screen or reorders the text of an operator's terminal. ``TextConsole.render_str`` is the
  one place rich turns a string into text (messages, table cells, live displays): safe
  there, safe everywhere.
- Styles are ours only: ``styled`` wraps our own words (``error:``), escaped too.
- ``--json`` output is ``json.dumps`` of the answer: exact, JSON escapes control characters.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from seawall.names import visible


class TextConsole(Console):
    """A rich console for which every string is plain text, its hidden characters escaped."""

    def render_str(self, text: str, **options: Any) -> Text:
        options.update(markup=False, emoji=False)
        rendered: Text = super().render_str(visible(text), **options)
        return rendered


console = TextConsole(stderr=True, soft_wrap=True)  # a message stays one line, for grep
_stdout = TextConsole()


def styled(text: str, style: str) -> Text:
    """Our own words in a style (``styled("error:", "red")``); escaped like the rest."""
    return Text(visible(text), style=style)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def print_line(text: str) -> None:
    """One line on stdout, for scripts and people alike (an id, a token, a URI)."""
    sys.stdout.write(visible(text) + "\n")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    table = Table(*columns, show_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    _stdout.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class _Description(ProgressColumn):
    """A task's description as text (rich's own column reads it as markup)."""

    def render(self, task: Task) -> Text:
        return Text(visible(task.description), style="progress.description")


def progress() -> Progress:
    """A progress bar of bytes on stderr, gone when done."""
    return Progress(_Description(), BarColumn(), DownloadColumn(binary_units=True),
                    TimeRemainingColumn(), console=console, transient=True)


def time_text(time_ns: int | None) -> str:
    if time_ns is None:
        return "-"
    return datetime.fromtimestamp(time_ns / 1e9, UTC).isoformat(timespec="milliseconds")
