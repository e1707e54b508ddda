"""The text forms of group settings that users type, for the CLI and the console alike.

``settings_body`` turns what was typed (``100ms``, ``48h``, ``1G``, ``80%``, ``none``,
``db:30s,app``) into the API's settings fields; a setting not given (None) is not sent.
Pure: parsing only; ranges are checked by the manager (``groups.settings.check``), so the
CLI and the console refuse a value with the same message.
"""

from __future__ import annotations

from typing import Any

from seawall.errors import InvalidInput
from seawall.units import parse_duration_s, parse_size_bytes


def _none(text: str) -> bool:
    return text.strip().lower() == "none"


def parse_ratio(text: str) -> float:
    """``80%`` or ``0.8``."""
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise InvalidInput(f"invalid share {text!r} (examples: 80%, 0.8)") from None


def parse_boot_order(text: str) -> list[dict[str, Any]]:
    if _none(text):
        return []
    steps = []
    for item in text.split(","):
        name, _, delay = item.strip().partition(":")
        if not name:
            raise InvalidInput(f"invalid boot order {text!r} (example: db:30s,app)")
        if delay.startswith("-"):
            raise InvalidInput(f"boot delay of {name} must not be negative: {delay}")
        steps.append({"name": name, "delay_s": parse_duration_s(delay) if delay else 0.0})
    return steps


def settings_body(**given: str | None) -> dict[str, Any]:
    """The API's settings fields for the options given (an option left out is not sent)."""
    parsers: dict[str, tuple[str, Any]] = {
        "checkpoint_interval": ("checkpoint_interval_s", parse_duration_s),
        "history": ("history_s", parse_duration_s),
        "journal_max": ("journal_max_bytes",
                        lambda t: None if _none(t) else parse_size_bytes(t)),
        "journal_warning": ("journal_warning_ratio", parse_ratio),
        "priority": ("priority", str),
        "compression": ("compression", str),
        "rpo_alert": ("rpo_alert_s", parse_duration_s),
        "test_reminder": ("test_reminder_s", parse_duration_s),
        "recovery_agent": ("recovery_agent", str),
        "storage": ("storage_path", str),
        "failover_network": ("failover_network", lambda t: None if _none(t) else t),
        "test_network": ("test_network", lambda t: None if _none(t) else t),
        "boot_order": ("boot_order", parse_boot_order),
        "pre_script": ("pre_script", lambda t: None if _none(t) else t),
        "post_script": ("post_script", lambda t: None if _none(t) else t),
        "script_timeout": ("script_timeout_s", parse_duration_s),
        "quiesce_every": ("quiesce_every_s", lambda t: 0.0 if _none(t) else parse_duration_s(t)),
    }
    body = {}
    for option, text in given.items():
        if text is not None:
            field, parse = parsers[option]
            body[field] = parse(text)
    return body
