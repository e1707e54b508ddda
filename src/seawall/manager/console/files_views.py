"""What the file browser shows and links to, from the file service's answers (pure).

Rules: names and paths come from the restored disk and are untrusted. They reach a page
only through the templates' escaping, and a URL only through ``quote`` with no safe
characters (a name with ``/``, ``?``, ``#``, ``&`` or ``%`` stays one query value). A name
that is not valid UTF-8 (the service keeps its bytes as surrogate escapes) is shown with
replacement characters and offers no link of its own: its parent's archive restores it
byte for byte. A download's file name goes into ``Content-Disposition`` twice: an ASCII
fallback with everything outside ``[A-Za-z0-9._-]`` replaced, and the exact name
percent-encoded (RFC 6266 / RFC 5987): no quote or line break can reach the header.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import quote, urlencode

WHOLE = "none"
"""The ``part`` of a volume without a partition table (its file system spans it)."""

_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9._-]")


def readable(name: str) -> str:
    """``name`` as text a page can hold (invalid UTF-8 replaced by U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_utf8(name: str) -> bool:
    return readable(name) == name


def _query(params: dict[str, str]) -> str:
    return urlencode(params, quote_via=quote, safe="")


def page_url(group: str, volume: str, action: str = "", **params: str) -> str:
    """``/files/GROUP/VOLUME[/ACTION]?...`` with every part encoded."""
    base = f"/files/{quote(group, safe='')}/{quote(volume, safe='')}"
    if action:
        base += f"/{action}"
    return f"{base}?{_query(params)}" if params else base


def breadcrumbs(group: str, volume: str, where: dict[str, str],
                path: str) -> list[dict[str, str]]:
    """The links to ``path``'s parents and itself, the root first: (label, href)."""
    crumbs = [{"label": "/", "href": page_url(group, volume, **where, path="/")}]
    parts = [p for p in path.split("/") if p]
    for depth, part in enumerate(parts, 1):
        crumbs.append({"label": readable(part), "href": page_url(
            group, volume, **where, path="/" + "/".join(parts[:depth]))})
    return crumbs


def entry_rows(group: str, volume: str, where: dict[str, str], path: str,
               entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A directory's entries with their links: a directory to browse and to download as an
    archive, a file to download; none for other kinds or a name that cannot travel."""
    rows = []
    for entry in entries:
        name, kind = entry["name"], entry["type"]
        child = posixpath.join(path, name)
        linkable = is_utf8(name) and "/" not in name and name not in ("", ".", "..")
        row = {**entry, "label": readable(name), "linkable": linkable,
               "browse": None, "download": None, "archive": None}
        if linkable and kind == "dir":
            row["browse"] = page_url(group, volume, **where, path=child)
            row["archive"] = page_url(group, volume, "archive", **where, path=child)
        elif linkable and kind == "file":
            row["download"] = page_url(group, volume, "download", **where, path=child)
        elif linkable and kind == "symlink":
            row["archive"] = page_url(group, volume, "archive", **where, path=child)
        rows.append(row)
    return rows


def part_text(part: str) -> int | None:
    """The service's partition number for the browser's ``part`` (``none`` or a number)."""
    return None if part == WHOLE else int(part)


def content_disposition(filename: str) -> str:
    """An attachment header naming ``filename`` safely (see the module's rules)."""
    fallback = _UNSAFE_ASCII.sub("_", readable(filename)) or "download"
    exact = quote(filename.encode("utf-8", "surrogateescape"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"
