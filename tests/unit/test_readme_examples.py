"""Every ``seawall ...`` example of the README parses against the real CLI.

The examples are the ``sh`` blocks' command lines: continued lines (``\\``, a trailing
``|``) are joined, comments dropped, and each ``seawall`` command is taken out of its shell
around it (``VAR=$(...)``, pipes, ``&``, redirections, ``NAME=value`` prefixes). Shell
variables stand for a value (``"$ID"``: a word); ``[--opt X]`` is the README's notation for
an optional part and ``a|b`` inside it for a choice: both are taken as the first form.
Each command is then parsed by the CLI's own click commands, group by group down to the
leaf (``make_context``: options, arguments, types, required ones), without running it. So
an option the README names and the CLI does not take, or a subcommand that does not exist,
fails here, with the README line in the message.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from seawall.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"
SEPARATORS = {"|", "||", "&", "&&", ";", "(", ")", "$("}


def sh_lines(text: str) -> list[str]:
    """The logical lines of the README's ``sh`` blocks."""
    lines: list[str] = []
    pending = ""
    in_sh = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_sh = line.strip() == "```sh" and not in_sh
            continue
        if not in_sh:
            continue
        code = re.sub(r"(^|\s)#.*$", "", line).rstrip()  # a word that starts with #
        if code.endswith("\\"):
            pending += code[:-1] + " "
        elif code.endswith("|"):
            pending += code + " "
        else:
            lines.append(pending + code)
            pending = ""
    return [line for line in lines if line.strip()]


def commands(line: str) -> list[list[str]]:
    """The ``seawall`` commands of one shell line, as argument lists (without ``seawall``)."""
    line = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split("|")[0], line)
    line = line.replace("$(", " ( ")
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;()<>")
    lexer.whitespace_split = True
    found: list[list[str]] = []
    segment: list[str] = []
    skip_next = False
    for word in [*lexer, ";"]:
        if skip_next:
            skip_next = False
        elif set(word) <= set("<>"):
            skip_next = True  # a redirection and its target
        elif word in SEPARATORS or set(word) <= set("|&;()"):
            while segment and re.fullmatch(r"[A-Z_]+=.*", segment[0]):
                segment.pop(0)  # NAME=value before the command
            if segment[:1] == ["seawall"]:
                found.append([f"x{w[1:]}" if w.startswith("$") else w for w in segment[1:]])
            segment = []
        else:
            segment.append(word)
    return found


def parse(args: list[str]) -> None:
    """Parse ``args`` with the CLI's commands down to the leaf, running nothing (typer
    ships its own click: its groups are known by ``resolve_command``)."""
    command: Any = typer.main.get_command(app)
    context = command.make_context("seawall", list(args))
    while hasattr(command, "resolve_command"):
        rest = [*context._protected_args, *context.args]
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)


EXAMPLES = [(line, args) for line in sh_lines(README.read_text()) for args in commands(line)]


def test_the_readme_has_its_examples() -> None:
    assert len(EXAMPLES) > 80  # a change in the extraction that loses them fails here
    assert ["export", "--stop", "xURI"] in [args[2:] for _line, args in EXAMPLES
                                              if args[:1] == ["--url"]]


@pytest.mark.parametrize(("line", "args"), EXAMPLES, ids=[" ".join(a)[:60] for _l, a in EXAMPLES])
def test_each_readme_example_parses(line: str, args: list[str]) -> None:
    try:
        parse(args)
    except Exception as exc:  # typer's own click's usage errors
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        pytest.fail(f"README: {line}\n  seawall {shlex.join(args)}\n  {message}")


@pytest.mark.parametrize("args", [["group", "create", "app", "--bogus"], ["nosuch"],
                                  ["export", "--url"], ["login", "--fingerprint"]])
def test_a_wrong_example_would_fail(args: list[str]) -> None:
    with pytest.raises(Exception, match=r"No such|requires an argument"):
        parse(args)
