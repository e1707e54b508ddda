"""Output safety of the CLI: names are text, never markup, and hidden characters show.

Names come from users (tags, token labels, notes), peers and guests' file systems; each
case here broke or fooled the original CLI: rich markup in a cell raised MarkupError (the
whole listing lost), ESC reached the terminal raw, and the error printer itself crashed on
a message that echoed such a name.
"""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import seawall.cli
from seawall.cli.output import console, print_line, print_table, progress, styled
from seawall.errors import InvalidInput
from seawall.manager.recovery.report_html import render_html
from seawall.names import MAX_CHECKPOINT_NAME_CHARS, check_checkpoint_name, visible
from seawall.observability.logs import TextFormatter

MARKUP = "[bold red]M[/bold red] [/nonexistent]"  # the tag name


@pytest.mark.parametrize(("text", "shown"), [
    ("\x1b[2J", "\\x1b[2J"),  # ESC: clear screen
    ("a\x9b31mb", "a\\x9b31mb"),  # C1 CSI, one byte
    ("a\x7fb\x00c", "a\\x7fb\\x00c"),  # DEL, NUL
    ("one\ntwo\tthree\r", "one\\x0atwo\\x09three\\x0d"),
    ("abc\u202edef", "abc\\u202edef"),  # right-to-left override
    ("x\u2066y\u200bz\u2028", "x\\u2066y\\u200bz\\u2028"),  # isolate, zero width, line sep.
    ("bad\udcff", "bad\\udcff"),  # a byte that was not UTF-8 (surrogateescape)
])
def test_visible_escapes_what_a_terminal_acts_on(text: str, shown: str) -> None:
    assert visible(text) == shown


@pytest.mark.parametrize("text", [MARKUP, "before-upgrade", "Überprüfung ✓ 日本",
                                  "a b\u00a0c", "C:\\backup\\x1b"])
def test_visible_keeps_printable_text(text: str) -> None:
    assert visible(text) == text


def test_tables_print_names_as_typed_and_escape_control_characters(
        capsys: pytest.CaptureFixture[str]) -> None:
    print_table([{"id": 1, "name": MARKUP}, {"id": 2, "name": "x\x1b]0;owned\x07\u202ey"}],
                ["id", "name"])
    out = capsys.readouterr().out
    assert MARKUP in out
    assert "x\\x1b]0;owned\\x07\\u202ey" in out
    assert "\x1b" not in out and "\u202e" not in out


def test_messages_and_lines_are_text(capsys: pytest.CaptureFixture[str]) -> None:
    console.print(styled("error:", "red"), f"no group named '{MARKUP}\x1b[31m'")
    print_line(f"token \x1b[8m{MARKUP}")
    captured = capsys.readouterr()
    assert f"error: no group named '{MARKUP}\\x1b[31m'" in captured.err
    assert captured.out == f"token \\x1b[8m{MARKUP}\n"
    assert "\x1b" not in captured.err + captured.out


def test_progress_descriptions_are_text(capsys: pytest.CaptureFixture[str]) -> None:
    with progress() as bar:
        task = bar.add_task(f"restore of /{MARKUP}\x1b[2J", total=10)
        bar.update(task, completed=10)
        bar.refresh()
    assert "\x1b[2J" not in capsys.readouterr().err


def test_the_error_printer_survives_a_hostile_message(tmp_path: Path) -> None:
    """The CLI main's own error line: it crashed with a traceback on markup."""
    data = tmp_path / f"{MARKUP}\x1b[31m"
    result = subprocess.run([sys.executable, "-m", "seawall", "site", "run", "--data",
                             str(data)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "\x1b" not in result.stderr
    assert f"{MARKUP}\\x1b[31m" in result.stderr.replace("\n", "")  # rich wraps at spaces


def test_cli_prints_only_through_output() -> None:
    """No CLI module prints around ``cli.output``: no print(), no console or progress of
    its own, no markup in its strings (``console`` would show it as typed anyway)."""
    problems = []
    for path in sorted(Path(seawall.cli.__file__).parent.glob("*.py")):
        if path.name == "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                    node.func.id in ("print", "Console", "Progress")):
                problems.append(f"{where}: {node.func.id}()")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rich"):
                problems.append(f"{where}: imports {node.module}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    "[/" in node.value or "[bold" in node.value):
                problems.append(f"{where}: markup {node.value!r}")
    assert problems == []


@pytest.mark.parametrize("name", ["", "before-upgrade", MARKUP, "Überprüfung ✓",
                                  "x" * MAX_CHECKPOINT_NAME_CHARS])
def test_checkpoint_names_taken(name: str) -> None:
    assert check_checkpoint_name(name) == name


@pytest.mark.parametrize(("name", "rule"), [
    ("x" * (MAX_CHECKPOINT_NAME_CHARS + 1), "at most 128 characters, not 129"),
    ("\x1b[2Jgone", "\\x1b at position 0"),
    ("two\nlines", "\\x0a at position 3"),
    ("tab\there", "\\x09 at position 3"),
    ("abc\u202etxt.exe", "\\u202e at position 3"),
    ("c1\x9b", "\\x9b at position 2"),
    ("nb\u00a0sp", "\\xa0 at position 2"),
])
def test_checkpoint_names_refused_name_the_rule(name: str, rule: str) -> None:
    with pytest.raises(InvalidInput, match=r"printable|at most") as refused:
        check_checkpoint_name(name)
    assert rule in refused.value.message


def test_html_report_escapes_every_value() -> None:
    hostile = "<script>alert(1)</script>\"'&"
    page = render_html({
        "kind": "clone", "group": hostile, "site": hostile, "user": hostile,
        "state": hostile, "result": hostile, "notes": hostile, "error": hostile,
        "checkpoint": {"id": 1, "time": "t", "name": hostile},
        "steps": [{"step": hostile, "at": hostile}],
        "outputs": [{"volume": hostile, "path": hostile, "format": "raw"}],
        "scripts": {"pre": {"path": hostile, "error": hostile, "output": hostile}}})
    assert "<script>" not in page and "\"'&" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in page


def test_text_log_lines_escape_the_message_and_keep_tracebacks() -> None:
    """A name in a log line of ``site run`` neither acts on its terminal nor forges a line."""
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("seawall.test", logging.WARNING, __file__, 1,
                                   "could not record event %s", ("x\x1b[2J\n1 ERROR forged",),
                                   sys.exc_info())
    first, *rest = TextFormatter().format(record).splitlines()
    assert first.endswith("could not record event x\\x1b[2J\\x0a1 ERROR forged")
    assert "\x1b" not in first and rest[0] == "Traceback (most recent call last):"
