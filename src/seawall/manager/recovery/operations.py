"""What the recovery operations' services share: ids, the group check, the runner base.

Rules:
- Operation ids are sortable by time, readable, and safe as file and export names.
- ``OperationRunner.reconcile`` resumes or rolls back the active operations of the
  subclass's ``kinds`` that no request of this process is working on (``_tracking``):
  ``_guard`` serialises reconciling with that bookkeeping, so a reconcile never takes a
  request's half-done operation for an orphan.
- The end of an RTO is every image read back once over NBD (``read_first_blocks``).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from seawall.config import SiteConfig
from seawall.contract.agent_api import AgentApi
from seawall.errors import InvalidInput, PeerError, SeawallError
from seawall.http import JsonClient
from seawall.manager.groups.service import GroupService
from seawall.manager.models import Group, RecoveryOperation
from seawall.manager.recovery.reports import ReportStore, build_report
from seawall.manager.recovery.scripts import RecoveryScripts
from seawall.manager.recovery.store import OperationStore
from seawall.nbd.blocking import NbdClient

FIRST_READ_BYTES = 4096


def new_operation_id(prefix: str, now: datetime) -> str:
    """Sortable by time, readable, and safe as a file and export name."""
    return f"{prefix}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def recovery_group(groups: GroupService, name: str, command: str) -> Group:
    """The group, if this site is its recovery site; else a clear error saying where to go.
    A group spanning agents is one too: each volume is recovered from its member's journal
    at that member's marker (``GroupService.stream_at``)."""
    group, peer = groups.get(name)
    if group.role == "failed-over":
        raise InvalidInput(
            f"group {name} was failed over to this site and committed: it is not protected "
            f"now, so there is nothing to recover (`seawall group reverse {name}` protects "
            f"it back to {peer.name})")
    if group.role != "recovery":
        raise InvalidInput(
            f"group {name} is protected from this site: run `{command}` at its recovery "
            f"site {peer.name} (--url {peer.api_url})"
        )
    return group


def read_first_blocks(images: list[dict[str, Any]]) -> None:
    """Read each image once over NBD."""
    try:
        for image in images:
            with NbdClient(image["uri"]) as client:
                client.read(0, min(FIRST_READ_BYTES, image["size_bytes"]))
    except (OSError, SeawallError) as exc:
        raise PeerError(f"an image did not read back: {exc}") from None


class OperationRunner:
    """In-flight bookkeeping, reconcile and reports for a kind of recovery operation.

    A subclass names its ``kinds``, says which operations its agent still holds
    (``_at_agent``) and how to resume or roll back an orphan (``_reconcile_one``).
    """

    kinds: tuple[str, ...] = ()

    def __init__(self, config: SiteConfig, store: OperationStore, reports: ReportStore,
                 agent: JsonClient, groups: GroupService) -> None:
        self.config = config
        self.store = store
        self.reports = reports
        self.agent = AgentApi(agent)
        self.groups = groups
        self.scripts = RecoveryScripts(config, store)
        self._guard = threading.Lock()
        self._in_flight: set[str] = set()

    def reconcile(self) -> None:
        with self._guard:
            orphans = [op for op in self.store.active_of(self.kinds)
                       if op.operation_id not in self._in_flight]
            if not orphans:
                return
            at_agent = self._at_agent()
            for operation in orphans:
                self._reconcile_one(operation, operation.operation_id in at_agent)

    def _at_agent(self) -> set[str]:
        raise NotImplementedError

    def _reconcile_one(self, operation: RecoveryOperation, at_agent: bool) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _tracking(self, operation_id: str) -> Iterator[None]:
        with self._guard:
            self._in_flight.add(operation_id)
        try:
            yield
        finally:
            with self._guard:
                self._in_flight.discard(operation_id)

    def _report(self, operation: RecoveryOperation) -> dict[str, Any]:
        report = build_report(operation, self.config.name)
        self.reports.write(report)
        return report
