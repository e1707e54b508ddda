"""The console's file browser and report frame, pure parts: untrusted names from a restored
disk in URLs, pages and download headers; a report page's own policy."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from seawall.manager.access.policy import Role
from seawall.manager.access.service import Principal
from seawall.manager.console import files_views
from seawall.manager.console.app import page_templates
from seawall.manager.console.records_pages import report_csp
from seawall.manager.console.sessions import ConsoleUser
from seawall.manager.recovery.report_html import STYLE, render_html

WHERE = {"checkpoint": "42", "part": "2"}
HOSTILE = ["a&b?c=#%2F <x>.txt", "\"'><img src=x onerror=alert(1)>", "..%2F..%2Fetc",
           "new\nline", "spaces and ünïcode 名前", "%00", "+plus+"]


def entry(name: str, kind: str = "file") -> dict[str, object]:
    return {"name": name, "type": kind, "size_bytes": 5, "mode": "0644", "mtime_ns": 0,
            "uid": 0, "gid": 0, "link_target": None}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_travels_as_one_query_value(name: str) -> None:
    [row] = files_views.entry_rows("app", "disk0", WHERE, "/data", [entry(name)])
    url = urlsplit(row["download"])
    assert url.path == "/files/app/disk0/download" and not url.fragment
    assert parse_qs(url.query) == {"checkpoint": ["42"], "part": ["2"],
                                   "path": [f"/data/{name}"]}
    [folder] = files_views.entry_rows("app", "disk0", WHERE, "/", [entry(name, "dir")])
    assert parse_qs(urlsplit(folder["browse"]).query)["path"] == [f"/{name}"]
    assert parse_qs(urlsplit(folder["archive"]).query)["path"] == [f"/{name}"]


def test_a_name_that_is_not_utf8_is_shown_replaced_and_not_linked() -> None:
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")  # as the service decodes it
    [row] = files_views.entry_rows("app", "disk0", WHERE, "/", [entry(name)])
    assert row["label"] == "caf\ufffd.txt" and not row["linkable"]
    assert row["download"] is None and row["browse"] is None


def test_only_files_download_and_only_directories_browse() -> None:
    rows = files_views.entry_rows("app", "disk0", WHERE, "/", [
        entry("f"), entry("d", "dir"), entry("l", "symlink"), entry("dev", "block-device"),
        entry("a/b")])  # a name with '/' (crafted): no link would name it truly
    kinds = {r["name"]: (bool(r["download"]), bool(r["browse"]), bool(r["archive"]))
             for r in rows}
    assert kinds == {"f": (True, False, False), "d": (False, True, True),
                     "l": (False, False, True), "dev": (False, False, False),
                     "a/b": (False, False, False)}


def test_breadcrumbs_lead_to_each_parent() -> None:
    crumbs = files_views.breadcrumbs("app", "disk0", WHERE, "/var/a?b")
    assert [c["label"] for c in crumbs] == ["/", "var", "a?b"]
    assert [parse_qs(urlsplit(c["href"]).query)["path"] for c in crumbs] == [
        ["/"], ["/var"], ["/var/a?b"]]


@pytest.mark.parametrize("name", [*HOSTILE, b"\xff\xfe".decode("utf-8", "surrogateescape")])
def test_a_download_header_holds_no_quote_or_line_break(name: str) -> None:
    header = files_views.content_disposition(name)
    header.encode("latin-1")  # a header value: no surrogate, nothing outside latin-1
    assert "\n" not in header and "\r" not in header
    fallback = header.split('filename="')[1].split('"')[0]
    assert set(fallback) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    exact = header.split("filename*=UTF-8''")[1]
    assert ";" not in exact and " " not in exact and '"' not in exact


def test_the_browser_page_escapes_names_from_the_disk() -> None:
    user = ConsoleUser(Principal("u1", "olga", Role.OPERATOR, "t1"), "csrf-value")
    name = "<img src=x onerror=alert(1)>"
    listing = {"path": "/", "checkpoint": {"id": 42, "time_ns": 1, "name": "<b>tag</b>"},
               "partition": None, "partition_table": None, "filesystem": "ext4"}
    html = page_templates().env.get_template("files_browse.html").render(
        group="app", volume="disk0", path="/", listing=listing, user=user, site="dr",
        crumbs=files_views.breadcrumbs("app", "disk0", WHERE, "/"),
        rows=files_views.entry_rows("app", "disk0", WHERE, "/", [entry(name)]),
        choose="/files/app/disk0", here_archive="/files/app/disk0/archive?path=%2F")
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<b>tag</b>" not in html


def test_a_reports_page_may_use_its_own_stylesheet_and_nothing_else() -> None:
    page = render_html({"kind": "clone", "group": "app", "id": "r1"})
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    policy = report_csp(page)
    assert f"style-src 'sha256-{digest}';" in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'self'" in policy
    assert "script-src" not in policy and "unsafe" not in policy
    assert "style-src 'none'" in report_csp("<p>no style</p>")
