"""Text that comes from users or guests: which checkpoint names are taken, how text is shown.

Rules:
- A checkpoint name is empty (no label) or at most ``MAX_CHECKPOINT_NAME_CHARS``
  characters, each printable in ``str.isprintable``'s sense: no control characters (C0,
  DEL, C1: ESC, newline, tab), no format characters (bidi overrides such as U+202E,
  zero-width characters), no line or paragraph separators, no space but U+0020. It is
  checked where a tag is made: the manager's group service and the agent's tag route.
  Names made before this rule still exist in journals: they are shown through ``visible``.
- ``visible(text)`` is what a terminal may receive of any text from outside (names, error
  messages that echo input, file names read from a guest's file system): every control,
  format, surrogate (bytes that were not UTF-8) and line or paragraph separator character
  becomes a visible escape (``\\x1b``, ``\\u202e``, ``\\udcff``); all else is kept as it is.
"""

from __future__ import annotations

import unicodedata

from seawall.errors import InvalidInput

MAX_CHECKPOINT_NAME_CHARS = 128

_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
"""Unicode categories a terminal acts on or shows as nothing, instead of printing them."""


def visible(text: str) -> str:
    """``text`` with every character a terminal would act on, or hide, escaped."""
    if text.isprintable():  # the common case: nothing to look at character by character
        return text
    return "".join(_escape(char) if unicodedata.category(char) in _HIDDEN_CATEGORIES else char
                   for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def check_checkpoint_name(name: str) -> str:
    """``name`` if a checkpoint may carry it (module rules), else InvalidInput naming why."""
    if len(name) > MAX_CHECKPOINT_NAME_CHARS:
        raise InvalidInput(f"a checkpoint name has at most {MAX_CHECKPOINT_NAME_CHARS} "
                           f"characters, not {len(name)}")
    for position, char in enumerate(name):
        if not char.isprintable():
            raise InvalidInput(
                f"a checkpoint name has printable characters only: {_escape(char)} at "
                f"position {position} is a control, format or separator character (no "
                "ESC, newline, tab, bidi override; no space but ' ')")
    return name
