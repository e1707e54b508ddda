"""Group settings: ranges, names and what a change touches (``manager.groups.settings``, pure),
and the CLI's parsing of the settings options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from seawall.agent.settings import check_paths
from seawall.config import SiteConfig
from seawall.contract.agent import PathsCheck
from seawall.errors import InvalidInput
from seawall.manager.groups.options_text import parse_boot_order, parse_ratio, settings_body
from seawall.manager.groups.settings import (
    GroupOptions,
    SettingsChange,
    check,
    merge,
    protection_settings,
    recovery_paths,
)

VOLUMES = ["db", "app"]


def options(**values: Any) -> GroupOptions:
    return GroupOptions.model_validate(values)


def test_defaults_are_valid() -> None:
    defaults = GroupOptions()
    check(defaults, VOLUMES, "dr")
    assert (defaults.rpo_alert_s, defaults.journal_warning_ratio) == (300.0, 0.75)
    assert defaults.test_reminder_s == 30 * 86400.0


@pytest.mark.parametrize(("values", "message"), [
    ({"checkpoint_interval_s": 0.01}, "checkpoint interval must be between 100ms and 1h"),
    ({"checkpoint_interval_s": 7200}, "checkpoint interval"),
    ({"history_s": 60}, "history must be between 1h and 30d"),
    ({"history_s": 31 * 86400}, "history"),
    ({"journal_max_bytes": 1 << 20}, "journal limit 1.0 MiB is too small"),
    ({"journal_warning_ratio": 0.05}, "journal warning threshold must be between 10% and 100%"),
    ({"journal_warning_ratio": 1.5}, "journal warning threshold"),
    ({"priority": "urgent"}, "priority must be high, medium or low, not 'urgent'"),
    ({"compression": "gzip"}, "compression must be zstd, lz4 or none"),
    ({"rpo_alert_s": 0}, "RPO alert threshold must be between 1s and 7d"),
    ({"test_reminder_s": 60}, "test reminder interval must be between 1h and 365d"),
    ({"recovery_agent": "elsewhere"}, "site dr has one agent, named dr"),
    ({"storage_path": "relative/dir"}, "storage location 'relative/dir' must be an absolute"),
    ({"pre_script": "scripts/pre.sh"}, "pre-recovery script 'scripts/pre.sh' must be the name "
                                       "of a script in the recovery site's scripts directory"),
    ({"post_script": "../pre.sh"}, "post-recovery script '../pre.sh' must be the name"),
    ({"post_script": ".."}, "post-recovery script '..' must be the name"),
    ({"pre_script": "-rf"}, "pre-recovery script '-rf' must be the name"),
    ({"boot_order": [{"name": "web", "delay_s": 0}]}, "boot order names web, not in the group"),
    ({"boot_order": [{"name": "db"}, {"name": "db"}]}, "boot order names a volume twice"),
    ({"boot_order": [{"name": "db", "delay_s": -5}]}, "boot delay of db must be between 0"),
    ({"script_timeout_s": 0.5}, "script timeout must be between 1s and 1h"),
])
def test_out_of_range_is_refused_with_a_clear_message(values: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        check(options(**values), VOLUMES, "dr")


def test_limits_themselves_are_accepted() -> None:
    check(options(checkpoint_interval_s=0.1, history_s=3600, journal_max_bytes=64 << 20,
                  journal_warning_ratio=1.0, rpo_alert_s=1, script_timeout_s=3600,
                  recovery_agent="dr", storage_path="/srv/journals",
                  boot_order=[{"name": "db", "delay_s": 30}, {"name": "app"}]), VOLUMES, "dr")


def test_merge_changes_only_the_fields_given_and_says_what_changed() -> None:
    current = options(recovery_agent="dr", priority="low")
    new, changed = merge(current, {"history_s": 172800.0, "priority": "low",
                                   "journal_max_bytes": 128 << 20}, VOLUMES, "dr")
    assert changed == {"history_s": [86400.0, 172800.0],
                       "journal_max_bytes": [None, 128 << 20]}
    assert new.priority == "low" and new.recovery_agent == "dr"
    assert current.history_s == 86400.0  # the current settings are not touched


def test_merge_refuses_an_invalid_change_whole() -> None:
    with pytest.raises(InvalidInput, match="history must be between"):
        merge(GroupOptions(), {"priority": "high", "history_s": 10.0}, VOLUMES, "dr")


def test_merge_clears_optional_settings_but_not_required_ones() -> None:
    current = options(journal_max_bytes=1 << 30, test_network="isolated")
    new, changed = merge(current, {"journal_max_bytes": None, "test_network": None},
                         VOLUMES, "dr")
    assert new.journal_max_bytes is None and new.test_network is None
    assert set(changed) == {"journal_max_bytes", "test_network"}
    with pytest.raises(InvalidInput, match="history_s cannot be cleared"):
        merge(current, {"history_s": None}, VOLUMES, "dr")


def test_storage_location_is_set_at_create_only() -> None:
    current = options(recovery_agent="dr", storage_path="/srv/a")
    with pytest.raises(InvalidInput, match="storage_path is set when the group is created"):
        merge(current, {"storage_path": "/srv/b"}, VOLUMES, "dr")
    _, changed = merge(current, {"storage_path": "/srv/a", "recovery_agent": "dr"},
                       VOLUMES, "dr")
    assert changed == {}


def test_change_model_knows_given_from_cleared() -> None:
    change = SettingsChange.model_validate({"journal_max_bytes": None, "priority": "high"})
    assert change.given() == {"journal_max_bytes": None, "priority": "high"}


def test_what_the_agents_take() -> None:
    settings = options(checkpoint_interval_s=2.0, compression="lz4", pre_script="/x/pre",
                       storage_path="/srv/j")
    assert protection_settings(settings) == {"checkpoint_interval_s": 2.0, "codec": "lz4",
                                             "priority": "medium", "quiesce_every_s": 0.0}
    assert protection_settings(settings, frozenset({"compression"})) == {"codec": "lz4"}
    assert recovery_paths(settings) == {"directories": ["/srv/j"], "scripts": ["/x/pre"]}


def test_quiesce_every_is_none_or_between_a_minute_and_a_day() -> None:
    check(options(quiesce_every_s=0.0), ["disk0"], "dr")
    check(options(quiesce_every_s=3600.0), ["disk0"], "dr")
    for value in (30.0, 2 * 86400.0):
        with pytest.raises(InvalidInput, match="quiesce interval must be between 1m and 1d"):
            check(options(quiesce_every_s=value), ["disk0"], "dr")
    assert settings_body(quiesce_every="1h") == {"quiesce_every_s": 3600.0}
    assert settings_body(quiesce_every="none") == {"quiesce_every_s": 0.0}


def test_cli_parses_settings_options() -> None:
    assert settings_body(history="48h", journal_max="none", journal_warning="80%",
                         priority=None, boot_order="db:30s,app") == {
        "history_s": 172800.0, "journal_max_bytes": None, "journal_warning_ratio": 0.8,
        "boot_order": [{"name": "db", "delay_s": 30.0}, {"name": "app", "delay_s": 0.0}]}
    assert parse_ratio("0.9") == 0.9
    assert parse_boot_order("none") == []
    with pytest.raises(InvalidInput, match="must not be negative"):
        parse_boot_order("db:-5s")
    with pytest.raises(InvalidInput, match="invalid share"):
        parse_ratio("lots")


def test_agent_checks_paths_on_its_host(tmp_path: Path) -> None:
    """Storage only where the site allows, scripts only from its scripts directory."""
    config = SiteConfig(name="dr", site_id="dr-id", data_dir=tmp_path / "data",
                        api_host="127.0.0.1", api_port=7000, replication_host="127.0.0.1",
                        replication_port=7001, storage_roots=(tmp_path / "allowed",))
    config.scripts_dir.mkdir(parents=True, mode=0o700)
    (tmp_path / "allowed").mkdir()
    script, plain = config.scripts_dir / "pre.sh", config.scripts_dir / "notes.txt"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    plain.write_text("")
    check_paths(PathsCheck(directories=[str(tmp_path / "allowed"), str(config.data_dir)],
                           scripts=["pre.sh", str(script)]), config)
    with pytest.raises(InvalidInput) as refused:
        check_paths(PathsCheck(directories=[str(config.data_dir / "none"), str(tmp_path)],
                               scripts=["notes.txt", "gone.sh", "/bin/sh"]), config)
    scripts, allowed = config.scripts_dir, f"{config.data_dir}, {tmp_path}/allowed"
    assert refused.value.message == (
        f"at the recovery site: {config.data_dir}/none is not a directory; storage location "
        f"'{tmp_path}' is outside the directories this site allows ({allowed}; `site init "
        f"--storage-root` adds one); script {scripts}/notes.txt is not an executable file; "
        f"no script gone.sh in {scripts} at the recovery site; script '/bin/sh' is outside "
        f"{scripts}: give a path inside it (relative to it, or absolute under it)")


def test_change_model_refuses_unknown_settings() -> None:
    with pytest.raises(ValueError, match="histroy_s"):
        SettingsChange.model_validate({"histroy_s": 3600})
