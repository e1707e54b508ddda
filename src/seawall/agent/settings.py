"""Group settings as the agent takes them after create, and the paths it vouches for.

Rules:
- A change names only the fields that change (``exclude_unset``); the agent applies it in
  place to the running group and to its saved state, with no restart and no resync.
- ``check_paths`` answers for this host: the site manager asks it because a storage
  location or a recovery script is meaningful only where the agent runs. A path that is
  missing (or not a directory, or not executable) is an ``InvalidInput`` naming every one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from seawall.errors import InvalidInput


class ProtectionChange(BaseModel):
    """Settings of a protected group that change in place (``ProtectionSpec``'s names)."""

    checkpoint_interval_s: float | None = Field(default=None, ge=0.1, le=3600.0)
    codec: Literal["zstd", "lz4", "none"] | None = None
    priority: Literal["high", "medium", "low"] | None = None


class RetentionChange(BaseModel):
    """Retention of a recovered group (``RecoverySpec``'s names); checked by its policy."""

    history_s: float
    journal_max_bytes: int | None
    journal_warning_ratio: float


class PathsCheck(BaseModel):
    directories: list[str] = Field(default=[], max_length=16)
    executables: list[str] = Field(default=[], max_length=16)


def check_paths(paths: PathsCheck) -> None:
    """Refuse unless every directory is one and every executable is a runnable file."""
    problems = []
    for text in paths.directories:
        path = Path(text)
        if not path.is_absolute() or not path.is_dir():
            problems.append(f"{text} is not a directory")
    for text in paths.executables:
        path = Path(text)
        if not path.is_absolute() or not path.is_file():
            problems.append(f"{text} does not exist")
        elif not os.access(path, os.X_OK):
            problems.append(f"{text} is not executable")
    if problems:
        raise InvalidInput(f"at the recovery site: {'; '.join(problems)}")
