"""What the console's templates show, shaped from the services' answers (pure).

Rules: numbers are shown with their unit (``format_duration``, ``format_rate``); an RPO
is ``ok`` up to half its alert threshold, ``warn`` up to it, ``bad`` over it, ``unknown``
when there is none; a setting is shown in the form the CLI takes (``setting_text``), so
that sending a form back unchanged changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from seawall.manager.groups.settings import COMPRESSIONS, PRIORITIES
from seawall.units import format_bytes

_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


def format_duration(seconds: float | None) -> str:
    """``1h 5m``-style, two units at most; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    parts: list[str] = []
    left = int(seconds)
    for unit, size in _UNITS:
        if left >= size or (unit == "s" and not parts):
            count, left = divmod(left, int(size))
            parts.append(f"{count}{unit}")
    return " ".join(parts[:2])


def format_rate(bytes_per_s: float | None) -> str:
    return "-" if bytes_per_s is None else f"{format_bytes(bytes_per_s)}/s"


def format_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.0f}%"


def format_time_ns(time_ns: int | None) -> str:
    if not time_ns:
        return "-"
    return datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_iso(moment: str | None) -> str:
    """An ISO 8601 UTC time from the services, to the second (``2026-12-08 00:47:18 UTC``)."""
    if not moment:
        return "-"
    return datetime.fromisoformat(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def rpo_level(rpo_s: float | None, threshold_s: float | None) -> str:
    if rpo_s is None or not threshold_s:
        return "unknown"
    if rpo_s <= threshold_s / 2:
        return "ok"
    return "warn" if rpo_s <= threshold_s else "bad"


def duration_text(seconds: float) -> str:
    """A duration as the CLI takes it, exactly (``24h``, ``500ms``, ``90s``)."""
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    milliseconds = seconds * 1000
    return f"{milliseconds:g}ms" if milliseconds == int(milliseconds) else f"{seconds!r}"


def size_text(count: int | None) -> str:
    if count is None:
        return "none"
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


EDITABLE = (  # (form field = the CLI option's name, setting, label, text form)
    ("checkpoint_interval", "checkpoint_interval_s", "Checkpoint interval", duration_text),
    ("history", "history_s", "History", duration_text),
    ("journal_max", "journal_max_bytes", "Journal limit", size_text),
    ("journal_warning", "journal_warning_ratio", "Journal warning at",
     lambda ratio: f"{100 * ratio:g}%"),
    ("priority", "priority", "Priority", str),
    ("compression", "compression", "Compression", str),
    ("rpo_alert", "rpo_alert_s", "RPO alert over", duration_text),
    ("test_reminder", "test_reminder_s", "Test reminder after", duration_text),
)
"""The settings the group page edits, each in the CLI's syntax (``seawall group update``)."""


CHOICES = {"priority": PRIORITIES, "compression": COMPRESSIONS}


def setting_fields(settings: dict[str, Any],
                   typed: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The settings form's fields with their current values as text (or, after a refused
    change, what was typed, so the operator can correct it)."""
    return [{"field": field, "label": label, "choices": CHOICES.get(field, ()),
             "value": (typed or {}).get(field, text(settings[key]))}
            for field, key, label, text in EDITABLE]


def checkpoint_kind(checkpoint: dict[str, Any]) -> str:
    """``application`` (guests quiesced), ``tagged`` (named by a user) or ``periodic``."""
    if checkpoint.get("consistency") == "application":
        return "application"
    return "tagged" if checkpoint.get("name") else "periodic"
