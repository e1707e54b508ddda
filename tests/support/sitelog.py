"""The sites' shared log as the campaign's record: marks written in it, facts read from it.

Both sites of a run write their processes' log lines to one file (opened for appending, so
lines of several processes do not overwrite each other). The campaign writes its own
marks in between, so that a reader follows faults and reactions in one place, and so that
the facts a fault caused are the lines after its mark.

Rules:
- The log is the only record that survives an agent's restart: counts that live in an
  agent (its overflow counter) start again at zero, the log does not.
- Facts are read from the agents' own messages (``seawall.agent.protect.group`` and
  ``seawall.agent.protect.shipper``); a message changed there must be changed here.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

SYNC = re.compile(r"group (\S+): (initial|bitmap|delta)-sync from seq")
OVERFLOW = re.compile(r"group (\S+): backlog reached")
SESSION = re.compile(r"group (\S+): connected, recovery site durable at (\d+)")


class SiteLog:
    def __init__(self, path: Path, group: str, label: str) -> None:
        self.path = path
        self.group = group
        self.label = label

    def mark(self, text: str) -> str:
        """Append a mark line; returns the mark, for ``since``."""
        mark = f"campaign {self.label}: {text}"
        with self.path.open("a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {mark}\n")
        return mark

    def since(self, mark: str) -> str:
        """The log after the line holding ``mark`` (all of it if there is no such line)."""
        text = self.path.read_text()
        at = text.rfind(mark)
        return text if at < 0 else text[text.index("\n", at) + 1 :]

    def syncs(self, mark: str) -> list[str]:
        """Kinds of the syncs the group started after ``mark``, in order."""
        return [kind for group, kind in SYNC.findall(self.since(mark)) if group == self.group]

    def overflows(self, mark: str) -> int:
        return sum(group == self.group for group in OVERFLOW.findall(self.since(mark)))

    def sessions(self, mark: str) -> list[int]:
        """The recovery site's durable seq at each session the group started after ``mark``."""
        return [int(seq) for group, seq in SESSION.findall(self.since(mark))
                if group == self.group]
