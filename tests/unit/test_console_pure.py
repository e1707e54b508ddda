"""The console's pure parts fed values: session expiry, CSRF and origin checks, the cookie's
name, the settings form's text round trip, RPO colours, and the vendored files' sums."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.routing import Match

from seawall.manager.access.policy import Role
from seawall.manager.access.service import Principal
from seawall.manager.console import policy, views
from seawall.manager.console.app import ConsoleMount, page_templates
from seawall.manager.console.sessions import ConsoleUser
from seawall.manager.groups.options_text import settings_body
from seawall.manager.groups.settings import GroupOptions, merge
from seawall.manager.peer_listener import PEER_LISTENER_KEY

T0 = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
STATIC = Path(views.__file__).resolve().parent / "static"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_session_ends_when_idle_or_at_its_absolute_limit() -> None:
    rules = policy.SessionPolicy(idle_s=60, absolute_s=3600)
    assert rules.expiry(T0, T0, at(59.9)) is None
    assert rules.expiry(T0, T0, at(60)) == "idle"
    assert rules.expiry(T0, at(3000), at(3059)) is None  # used: the idle deadline moved
    assert rules.expiry(T0, at(3599), at(3600)) == "absolute"  # used just now, still over
    assert rules.expiry(T0, at(3599), at(3599.9)) is None


def test_defaults_are_half_an_hour_idle_and_twelve_hours_in_all() -> None:
    rules = policy.SessionPolicy()
    assert (rules.idle_s, rules.absolute_s) == (1800, 43200)


@pytest.mark.parametrize(("given", "ok"), [
    ("token-A", True), ("token-B", False), ("", False), (None, False),
    ("token-A ", False), ("TOKEN-A", False),
])
def test_csrf_token_must_be_the_sessions(given: str | None, ok: bool) -> None:
    assert policy.csrf_ok("token-A", given) is ok


def test_an_empty_expected_token_matches_nothing() -> None:
    assert not policy.csrf_ok("", "")


@pytest.mark.parametrize(("origin", "host", "ok"), [
    (None, "127.0.0.1:8000", True),  # scripts send no Origin
    ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
    ("https://dr.example:8443", "dr.example:8443", True),
    ("https://evil.example", "127.0.0.1:8000", False),
    ("http://127.0.0.1:8001", "127.0.0.1:8000", False),  # another site on the same host
    ("null", "127.0.0.1:8000", False),
    ("http://127.0.0.1:8000", None, False),
])
def test_origin_must_be_the_host(origin: str | None, host: str | None, ok: bool) -> None:
    assert policy.same_origin(origin, host) is ok


def test_secrets_are_random_and_only_their_hash_is_kept() -> None:
    first, second = policy.new_secret(), policy.new_secret()
    assert first != second and len(first) >= 43
    assert policy.session_hash(first) == hashlib.sha256(first.encode()).hexdigest()


def test_each_site_has_its_own_host_only_cookie() -> None:
    name = policy.cookie_name("ed51b8b6-0000-4000-8000-000000000000")
    assert name == "__Host-seawall-ed51b8b6"
    assert policy.cookie_name("0123abcd-ffff") != name


def test_a_settings_form_sent_back_unchanged_changes_nothing() -> None:
    settings = GroupOptions(checkpoint_interval_s=0.1, history_s=172800, rpo_alert_s=90,
                            journal_max_bytes=50 << 30, journal_warning_ratio=0.8,
                            test_reminder_s=7 * 86400.0)
    fields = views.setting_fields(settings.model_dump())
    typed = {f["field"]: f["value"] for f in fields}
    assert typed["checkpoint_interval"] == "100ms" and typed["history"] == "2d"
    assert typed["journal_max"] == "50G" and typed["journal_warning"] == "80%"
    assert typed["rpo_alert"] == "90s"
    _new, changed = merge(settings, settings_body(**typed), ["disk0"], "dr")
    assert changed == {}
    _new, changed = merge(settings, settings_body(**{**typed, "journal_max": "none"}),
                          ["disk0"], "dr")
    assert changed == {"journal_max_bytes": [50 << 30, None]}


def test_a_refused_form_keeps_what_was_typed() -> None:
    fields = views.setting_fields(GroupOptions().model_dump(), {"history": "10m"})
    assert {f["field"]: f["value"] for f in fields}["history"] == "10m"


@pytest.mark.parametrize(("rpo_s", "threshold_s", "level"), [
    (0.0, 300.0, "ok"), (150.0, 300.0, "ok"), (150.1, 300.0, "warn"), (300.0, 300.0, "warn"),
    (300.1, 300.0, "bad"), (None, 300.0, "unknown"), (10.0, 0.0, "unknown"),
])
def test_rpo_colour_against_its_threshold(rpo_s: float | None, threshold_s: float,
                                          level: str) -> None:
    assert views.rpo_level(rpo_s, threshold_s) == level


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.25, "0.2 s"), (42, "42s"), (3725, "1h 2m"), (90061, "1d 1h"),
])
def test_durations_shown(seconds: float | None, text: str) -> None:
    assert views.format_duration(seconds) == text


def test_times_shown_in_utc_to_the_second() -> None:
    assert views.format_iso("2026-12-08T00:47:18.489511+00:00") == "2026-12-08 00:47:18 UTC"
    assert views.format_iso("2026-12-08T01:47:18+01:00") == "2026-12-08 00:47:18 UTC"
    assert views.format_iso(None) == "-"


def test_checkpoint_kinds() -> None:
    assert views.checkpoint_kind({"name": "", "consistency": "crash"}) == "periodic"
    assert views.checkpoint_kind({"name": "v1", "consistency": "crash"}) == "tagged"
    assert views.checkpoint_kind({"name": "v1", "consistency": "application"}) == "application"


def test_vendored_files_are_the_recorded_ones() -> None:
    recorded = re.findall(r"^\| (\S+) \|.*\| `([0-9a-f]{64})` \|$",
                          (STATIC / "VENDORED.md").read_text(), re.MULTILINE)
    assert {name for name, _ in recorded} == {
        "htmx-2.0.11.min.js", "uPlot-1.6.32.iife.min.js", "uPlot-1.6.32.min.css"}
    for name, sha256 in recorded:
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == sha256, name


def test_the_group_page_of_a_vm_group_at_its_recovery_site_renders_read_only() -> None:
    user = ConsoleUser(Principal("u1", "alice", Role.ADMIN, "t1"), "csrf-value")
    settings = GroupOptions().model_dump()
    group = {"name": "web", "role": "recovery", "peer": "prod", "recovery_site": "dr",
             "volumes": [{"name": "web-vda", "size_bytes": 1 << 30}], "settings": settings,
             "vms": [{"name": "web<1>", "uuid": "u-1", "agent": "prod", "found": True,
                      "volumes": {"vda": "web-vda"},
                      "skipped": [{"disk": "sdb", "reason": "a CD-ROM"}]}]}
    status = {"state": "receiving", "sub_state": "", "rpo_s": 2.5, "rpo_alert_s": 300.0,
              "rpo_level": "ok", "history": {"covered_s": 600.0, "target_s": 86400.0,
                                             "ratio": 600 / 86400, "short": None},
              "journal": {"used_bytes": 1 << 20, "max_bytes": None, "ratio": None},
              "buffer": None,
              "alerts": []}
    html = page_templates().env.get_template("group.html").render(
        group=group, status=status, notice=None, error=None, user=user, site="dr",
        fields=views.setting_fields(settings), events=[], checkpoints_error=None,
        checkpoints=[{"id": 7, "time_ns": 1, "name": "v1", "kind": "tagged"}],
        may_edit=True, may_tag=True)
    assert "web&lt;1&gt;" in html and "<1>" not in html  # names are escaped
    assert "vda (web-vda)" in html and "sdb: a CD-ROM" in html
    assert 'id="settings-form"' not in html and 'id="tag-form"' not in html  # recovery side
    assert "change its settings at its protected site, prod" in html
    assert 'data-checkpoint-id="7"' in html
    assert 'hx-get="/groups/web/failover-test"' in html  # the wizard, at the recovery site
    assert 'href="/groups/web/failover-test/review?checkpoint=7"' in html  # from the timeline
    assert 'data-history-url="/groups/web/history.json"' in html
    assert '<meter id="gauge-history"' in html and 'id="gauge-journal"' not in html  # no limit


@pytest.mark.parametrize(("path", "state", "match"), [
    ("/", {}, Match.FULL), ("/groups/app", {}, Match.FULL), ("/static/console.css", {}, Match.FULL),
    ("/api/v1/nothing", {}, Match.NONE), ("/health", {}, Match.NONE),
    ("/metrics", {}, Match.NONE), ("/openapi.json", {}, Match.NONE),
    ("/login", {PEER_LISTENER_KEY: True}, Match.NONE),  # paired managers get no console
])
def test_the_console_takes_every_path_but_the_apis(path: str, state: dict[str, bool],
                                                   match: Match) -> None:
    mount = ConsoleMount("/", app=lambda scope, receive, send: None)
    found, _ = mount.matches({"type": "http", "path": path, "root_path": "", "state": state,
                              "method": "GET"})
    assert found is match
