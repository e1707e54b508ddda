"""A protection group's settings: the model, its ranges, and what a change touches (pure).

Rules:
- ``GroupOptions`` is every setting of a group with its default; both sites store the same
  values (``Group`` row, one column each) and the recovery site learns them from the
  protected site (at create, and by a peer call at each update).
- ``check`` refuses out-of-range values with a message naming the setting and its range
  (``InvalidInput``); it is pure. What only the recovery site can know (that a storage
  directory is one it allows, that a script is in its scripts directory and would run)
  is checked by its agent (``seawall.agent.settings``). A script is named, not given as
  a path: a plain name (``pre.sh``), or, as before, an absolute path that the recovery
  site then takes only inside its scripts directory.
- ``merge`` applies a change (only the fields given) and answers the full new settings
  and what changed as ``{field: [old, new]}``; it checks the result, so an invalid change
  is refused before anything anywhere is touched.
- Where a change goes without a resync: ``PROTECTION_FIELDS`` to the protected site's
  agent (checkpoint timer, bandwidth share, codec), ``RETENTION_FIELDS`` to the recovery
  site's agent (its ``RetentionPolicy``); the others are the managers' only (alerts,
  failover plans). ``CREATE_ONLY`` fields place the journal and cannot change after.
- The recovery agent is named after its site: a site has one agent today, so the only
  valid value is the recovery site's name (None: that one).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seawall.errors import InvalidInput
from seawall.units import format_bytes

HISTORY_MIN_S, HISTORY_MAX_S = 3600.0, 30 * 86400.0
CHECKPOINT_INTERVAL_MIN_S, CHECKPOINT_INTERVAL_MAX_S = 0.1, 3600.0
JOURNAL_MAX_MIN_BYTES = 64 * 1024 * 1024
JOURNAL_WARNING_MIN_RATIO, JOURNAL_WARNING_MAX_RATIO = 0.1, 1.0
RPO_ALERT_MIN_S, RPO_ALERT_MAX_S = 1.0, 7 * 86400.0
TEST_REMINDER_MIN_S, TEST_REMINDER_MAX_S = 3600.0, 365 * 86400.0
BOOT_DELAY_MAX_S = 3600.0
SCRIPT_TIMEOUT_MIN_S, SCRIPT_TIMEOUT_MAX_S = 1.0, 3600.0
QUIESCE_EVERY_MIN_S, QUIESCE_EVERY_MAX_S = 60.0, 86400.0
PRIORITIES = ("high", "medium", "low")
COMPRESSIONS = ("zstd", "lz4", "none")
NETWORK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"
SCRIPT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}")

PROTECTION_KEYS = {"checkpoint_interval_s": "checkpoint_interval_s", "priority": "priority",
                   "compression": "codec", "quiesce_every_s": "quiesce_every_s"}
"""Setting -> its name in the protected site agent's ``ProtectionSpec``."""
PROTECTION_FIELDS = frozenset(PROTECTION_KEYS)
RETENTION_FIELDS = frozenset({"history_s", "journal_max_bytes", "journal_warning_ratio"})
CREATE_ONLY = frozenset({"recovery_agent", "storage_path"})


class BootStep(BaseModel):
    """Start ``name`` (a VM of the group; a volume boots nothing), then wait ``delay_s``."""

    name: str = Field(min_length=1, max_length=64)
    delay_s: float = 0.0


class GroupOptions(BaseModel):
    """Every setting of a group (not its name, volumes or peer), with its default."""

    checkpoint_interval_s: float = 5.0
    history_s: float = 86400.0
    journal_max_bytes: int | None = None  # hard limit of the recovery journal; None: none
    journal_warning_ratio: float = 0.75  # warn when the journal holds this share of its limit
    priority: str = "medium"  # share of the site's throttled bandwidth: high|medium|low
    compression: str = "zstd"  # zstd (adaptive level) | lz4 | none
    rpo_alert_s: float = 300.0
    test_reminder_s: float = 30 * 86400.0
    recovery_agent: str | None = None  # None: the recovery site's (only) agent
    storage_path: str | None = None  # journal and replicas; None: the recovery site's data dir
    failover_network: str | None = Field(default=None, pattern=NETWORK_PATTERN)
    test_network: str | None = Field(default=None, pattern=NETWORK_PATTERN)
    boot_order: list[BootStep] = Field(default=[], max_length=256)
    pre_script: str | None = Field(default=None, max_length=4096)
    post_script: str | None = Field(default=None, max_length=4096)
    script_timeout_s: float = 300.0
    quiesce_every_s: float = 0.0  # application-consistent checkpoints this often; 0: none


class SettingsChange(BaseModel):
    """``group update``: only the fields given change (``null`` clears an optional one)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    checkpoint_interval_s: float | None = None
    history_s: float | None = None
    journal_max_bytes: int | None = None
    journal_warning_ratio: float | None = None
    priority: str | None = None
    compression: str | None = None
    rpo_alert_s: float | None = None
    test_reminder_s: float | None = None
    recovery_agent: str | None = None
    storage_path: str | None = None
    failover_network: str | None = Field(default=None, pattern=NETWORK_PATTERN)
    test_network: str | None = Field(default=None, pattern=NETWORK_PATTERN)
    boot_order: list[BootStep] | None = Field(default=None, max_length=256)
    pre_script: str | None = Field(default=None, max_length=4096)
    post_script: str | None = Field(default=None, max_length=4096)
    script_timeout_s: float | None = None
    quiesce_every_s: float | None = None

    def given(self) -> dict[str, Any]:
        """The fields the caller set, as plain values."""
        return self.model_dump(exclude_unset=True)


REQUIRED = frozenset(name for name, field in GroupOptions.model_fields.items()
                     if field.default is not None)
"""Settings that have a value always: a change may not clear them."""


def _between(what: str, value: float, low: float, high: float, text: str) -> None:
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {text}, not {value:g}")


def check(options: GroupOptions, volumes: list[str], recovery_site: str) -> None:
    """Refuse settings out of range, or naming what the group does not have."""
    _between("checkpoint interval", options.checkpoint_interval_s,
             CHECKPOINT_INTERVAL_MIN_S, CHECKPOINT_INTERVAL_MAX_S, "100ms and 1h (seconds)")
    _between("history", options.history_s, HISTORY_MIN_S, HISTORY_MAX_S,
             "1h and 30d (seconds)")
    if options.journal_max_bytes is not None and options.journal_max_bytes < JOURNAL_MAX_MIN_BYTES:
        raise InvalidInput(
            f"journal limit {format_bytes(options.journal_max_bytes)} is too small: at least "
            f"{format_bytes(JOURNAL_MAX_MIN_BYTES)}, or none for no limit")
    _between("journal warning threshold", options.journal_warning_ratio,
             JOURNAL_WARNING_MIN_RATIO, JOURNAL_WARNING_MAX_RATIO,
             "10% and 100% of the journal limit (0.1 to 1)")
    if options.priority not in PRIORITIES:
        raise InvalidInput(f"priority must be high, medium or low, not {options.priority!r}")
    if options.compression not in COMPRESSIONS:
        raise InvalidInput(
            f"compression must be zstd, lz4 or none, not {options.compression!r}")
    _between("RPO alert threshold", options.rpo_alert_s, RPO_ALERT_MIN_S, RPO_ALERT_MAX_S,
             "1s and 7d (seconds)")
    _between("test reminder interval", options.test_reminder_s, TEST_REMINDER_MIN_S,
             TEST_REMINDER_MAX_S, "1h and 365d (seconds)")
    if options.recovery_agent not in (None, recovery_site):
        raise InvalidInput(
            f"no recovery agent {options.recovery_agent!r}: site {recovery_site} has one "
            f"agent, named {recovery_site}")
    if options.storage_path is not None and not options.storage_path.startswith("/"):
        raise InvalidInput(f"storage location {options.storage_path!r} must be an absolute "
                           "path at the recovery site")
    for what, script in (("pre-recovery script", options.pre_script),
                         ("post-recovery script", options.post_script)):
        if script is not None and not (script.startswith("/") or SCRIPT_NAME.fullmatch(script)):
            raise InvalidInput(f"{what} {script!r} must be the name of a script in the "
                               "recovery site's scripts directory (e.g. pre.sh)")
    _check_boot_order(options.boot_order, volumes)
    _between("script timeout", options.script_timeout_s, SCRIPT_TIMEOUT_MIN_S,
             SCRIPT_TIMEOUT_MAX_S, "1s and 1h (seconds)")
    if options.quiesce_every_s != 0:
        _between("quiesce interval", options.quiesce_every_s, QUIESCE_EVERY_MIN_S,
                 QUIESCE_EVERY_MAX_S, "1m and 1d (seconds), or none")


def _check_boot_order(steps: list[BootStep], volumes: list[str]) -> None:
    """Steps name volumes or VMs; a VM's disks are the group's volumes ``VM-TARGET``."""
    names = [step.name for step in steps]
    vms = {volume.rsplit("-", 1)[0] for volume in volumes if "-" in volume}
    unknown = sorted(set(names) - set(volumes) - vms)
    if unknown:
        raise InvalidInput(f"boot order names {', '.join(unknown)}, not in the group "
                           f"(its volumes: {', '.join(volumes)})")
    if len(set(names)) != len(names):
        raise InvalidInput("boot order names a volume twice")
    for step in steps:
        _between(f"boot delay of {step.name}", step.delay_s, 0.0, BOOT_DELAY_MAX_S,
                 "0 and 1h (seconds)")


def merge(current: GroupOptions, change: dict[str, Any], volumes: list[str],
          recovery_site: str) -> tuple[GroupOptions, dict[str, list[Any]]]:
    """The settings after ``change`` (checked), and ``{field: [old, new]}`` of what differs."""
    cleared = sorted(name for name, value in change.items() if value is None and name in REQUIRED)
    if cleared:
        raise InvalidInput(f"{', '.join(cleared)} cannot be cleared, only changed")
    old = current.model_dump()
    new = GroupOptions.model_validate({**old, **change})
    check(new, volumes, recovery_site)
    changed = {name: [old[name], value] for name, value in new.model_dump().items()
               if value != old[name]}
    fixed = sorted(CREATE_ONLY & set(changed))
    if fixed:
        raise InvalidInput(f"{', '.join(fixed)} is set when the group is created (it places "
                           "the journal): it cannot change")
    return new, changed


def protection_settings(options: GroupOptions,
                        fields: frozenset[str] = PROTECTION_FIELDS) -> dict[str, Any]:
    """What the protected site's agent takes of ``fields`` (``ProtectionSpec``'s names)."""
    values = options.model_dump()
    return {PROTECTION_KEYS[name]: values[name] for name in sorted(fields)}


def retention_settings(options: GroupOptions) -> dict[str, Any]:
    """What the recovery site's agent takes (``RecoverySpec``'s names)."""
    return {"history_s": options.history_s, "journal_max_bytes": options.journal_max_bytes,
            "journal_warning_ratio": options.journal_warning_ratio}


def recovery_paths(options: GroupOptions) -> dict[str, list[str]]:
    """Paths that must exist at the recovery site, for its agent to check."""
    return {"directories": [p for p in (options.storage_path,) if p],
            "scripts": [p for p in (options.pre_script, options.post_script) if p]}


def options_of(row: Any) -> GroupOptions:
    """The settings a ``Group`` row holds."""
    return GroupOptions.model_validate({name: getattr(row, name)
                                        for name in GroupOptions.model_fields})


def store(row: Any, options: GroupOptions) -> None:
    """Write ``options`` into a ``Group`` row (one column each)."""
    for name, value in options.model_dump().items():
        setattr(row, name, value)
