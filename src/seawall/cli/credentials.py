"""The CLI's per-user credentials file: per site manager URL, an API token and a pin.

Rules:
- The file is ``$SEAWALL_CREDENTIALS``, else ``$XDG_CONFIG_HOME/seawall/credentials.json``,
  else ``~/.config/seawall/credentials.json``; its directory is made mode 0700.
- It is written atomically and readable by its owner only (0600); a file that others can
  read or write is refused, not used (as ssh does with keys): someone may have its tokens.
- Keys are manager URLs without a trailing slash; an entry holds the token, the user, and
  whether ``seawall login`` made the token with a password (``logout`` revokes only those).
- ``pins`` holds, per URL, how the CLI trusts that manager's HTTPS (``cli.trust``): the
  certificate pinned at the first login (``cert_pem``), or an operator's CA bundle
  (``ca_bundle``). ``logout`` keeps it (as ssh's known_hosts): a pin changes only by a
  ``login`` with ``--fingerprint`` or ``--ca-bundle``. Being in this 0600 file, no other
  user can slip their own certificate in.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from seawall.atomic import atomic_write_json
from seawall.errors import InvalidInput


def credentials_path() -> Path:
    explicit = os.environ.get("SEAWALL_CREDENTIALS")
    if explicit:
        return Path(explicit)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "seawall" / "credentials.json"


def manager_key(url: str) -> str:
    return url.rstrip("/")


class CredentialStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or credentials_path()

    def get(self, url: str) -> dict[str, Any] | None:
        entry = self._read().get(manager_key(url))
        return dict(entry) if isinstance(entry, dict) else None

    def put(self, url: str, entry: dict[str, Any]) -> None:
        managers = self._read()
        managers[manager_key(url)] = entry
        self._write(managers)

    def remove(self, url: str) -> dict[str, Any] | None:
        managers = self._read()
        entry = managers.pop(manager_key(url), None)
        if entry is not None:
            self._write(managers)
        return dict(entry) if isinstance(entry, dict) else None

    def pin(self, url: str) -> dict[str, Any] | None:
        entry = self._read_file().get("pins", {}).get(manager_key(url))
        return dict(entry) if isinstance(entry, dict) else None

    def put_pin(self, url: str, pin: dict[str, Any]) -> None:
        content = self._read_file()
        self._write({**content.get("managers", {})},
                    {**content.get("pins", {}), manager_key(url): pin})

    def _read(self) -> dict[str, Any]:
        managers: dict[str, Any] = self._read_file().get("managers", {})
        return managers

    def _read_file(self) -> dict[str, Any]:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return {}
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidInput(f"{self.path} may be read by others (mode {mode & 0o777:o}): "
                               f"not used; `chmod 600 {self.path}` if it is yours")
        try:
            content = json.loads(self.path.read_text())
            sections_ok = all(isinstance(content.get(key, {}), dict)
                              for key in ("managers", "pins"))
        except (ValueError, AttributeError):
            sections_ok = False
        if not sections_ok or "managers" not in content:
            raise InvalidInput(f"{self.path} is not a Seawall credentials file")
        return dict(content)

    def _write(self, managers: dict[str, Any], pins: dict[str, Any] | None = None) -> None:
        if pins is None:
            pins = self._read_file().get("pins", {})
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_json(self.path, {"version": 1, "managers": managers, "pins": pins},
                          private=True)
