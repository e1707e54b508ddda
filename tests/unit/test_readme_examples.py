"""Every ``seawall ...`` example of the README parses against the real CLI.

The examples (``support.readme``: the ``sh`` blocks' commands, out of their shell) are
each parsed by the CLI's own click commands, group by group down to the
leaf (``make_context``: options, arguments, types, required ones), without running it. So
an option the README names and the CLI does not take, or a subcommand that does not exist,
fails here, with the README line in the message.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import typer

from seawall.cli.main import app
from support.readme import examples


def parse(args: list[str]) -> None:
    """Parse ``args`` with the CLI's commands down to the leaf, running nothing (typer
    ships its own click: its groups are known by ``resolve_command``)."""
    command: Any = typer.main.get_command(app)
    context = command.make_context("seawall", list(args))
    while hasattr(command, "resolve_command"):
        rest = [*context._protected_args, *context.args]
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)


EXAMPLES = examples()


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
