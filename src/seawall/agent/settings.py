"""The paths the agent vouches for (the changes it takes are ``seawall.contract.agent``).

Rules:
- A change names only the fields that change (``exclude_unset``); the agent applies it in
  place to the running group and to its saved state, with no restart and no resync.
- ``check_paths`` answers for this host: the site manager asks it because a storage
  location or a recovery script is meaningful only where the agent runs. A storage
  location must be a directory inside one this site allows (its data directory or a
  ``site init --storage-root``); a script must be one the scripts directory holds and
  would run (``seawall.agent.scripts.open_script``). Anything else is an ``InvalidInput``
  naming every problem.
"""

from __future__ import annotations

import os

from seawall.agent.control.scripts import open_script
from seawall.config import SiteConfig
from seawall.confined import inside_any
from seawall.contract.agent import PathsCheck
from seawall.errors import InvalidInput


def check_paths(paths: PathsCheck, config: SiteConfig) -> None:
    """Refuse unless every directory is an allowed one and every script would run."""
    problems = []
    for text in paths.directories:
        try:
            if not inside_any(config.storage_allowed, text, "storage location").is_dir():
                problems.append(f"{text} is not a directory")
        except InvalidInput as exc:
            problems.append(exc.message)
    for text in paths.scripts:
        try:
            os.close(open_script(config.scripts_dir, text))
        except InvalidInput as exc:
            problems.append(exc.message)
    if problems:
        raise InvalidInput(f"at the recovery site: {'; '.join(problems)}")
