"""Logging of every Seawall process, set up in one place: human lines or JSON lines.

Rules:
- ``setup_logging`` is called once per process by the CLI command that runs it (site,
  manager, agent); everything logs through the standard ``logging`` module to stderr, and
  uvicorn's own loggers propagate here (its servers are built with ``log_config=None``).
- ``text`` (the default) is one human line per record, its message through
  ``seawall.names.visible``: a name with ESC or a newline in it (a tag, a file name, a
  request's target) neither acts on the terminal of ``site run`` nor forges a log line; a
  traceback keeps its lines. ``json`` is one JSON object per
  line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``process`` (pid), ``message``,
  ``exception`` when there is one, and every field the call passed in ``extra`` (``group``,
  ``volume``, ``peer``), so log shippers can filter on them.
- The format chosen is exported in ``SEAWALL_LOG_FORMAT``, so that the agent started by
  ``site run`` logs the same way as its manager.
- httpx's line per request is shown only at ``SEAWALL_LOG=DEBUG``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from seawall.errors import InvalidInput
from seawall.names import visible

FORMAT_ENV = "SEAWALL_LOG_FORMAT"
LEVEL_ENV = "SEAWALL_LOG"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(processName)s[%(process)d] %(name)s %(levelname)s %(message)s"

_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
"""Attributes every record has: anything else on a record came in through ``extra``."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module rules for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, with hidden characters of the message escaped (module rules)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))


def setup_logging(log_format: str | None = None) -> None:
    """Log to stderr at ``SEAWALL_LOG`` (default INFO), as ``log_format`` (or the env's)."""
    chosen = (log_format or os.environ.get(FORMAT_ENV) or "text").lower()
    if chosen not in FORMATS:
        raise InvalidInput(f"log format must be text or json, not {chosen!r}")
    os.environ[FORMAT_ENV] = chosen  # for the processes this one starts (the site's agent)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    logging.basicConfig(level=os.environ.get(LEVEL_ENV, "INFO"), handlers=[handler],
                        force=True)
    if logging.getLogger().level > logging.DEBUG:
        # httpx logs every request at INFO: the manager's calls to its agent (one per status
        # request, per metrics scrape) would drown what matters.
        logging.getLogger("httpx").setLevel(logging.WARNING)
