"""The README's ``seawall ...`` examples, taken out of their shell (for the tests that
parse them all, ``tests/unit/test_readme_examples.py``, and those that run some).

``sh_lines`` gives the logical lines of the README's ``sh`` blocks: continued lines
(``\\``, a trailing ``|``) joined, comments dropped. ``commands`` takes each ``seawall``
command out of its shell (``VAR=$(...)``, pipes, ``&``, redirections, ``NAME=value``
prefixes); a shell variable stands for a word (``"$ID"``: ``xID``); ``[--opt X]`` is the
README's notation for an optional part and ``a|b`` inside it for a choice: both are taken
as the first form.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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




def examples() -> list[tuple[str, list[str]]]:
    """(README line, arguments after ``seawall``) of every example, in README order."""
    return [(line, args) for line in sh_lines(README.read_text()) for args in commands(line)]
