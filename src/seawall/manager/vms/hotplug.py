"""Disks hot-plugged into protected VMs join their group by themselves.

The agent's VM watch (``seawall.agent.protect.vm_watch``) reports, in its group's status,
each disk a protected VM has that the group holds no sink for; ``protect`` says whether
Seawall can mirror it. Each monitor round (``Monitor.followers``) hands the status
documents here.

Rules:
- A disk to protect is added through the one path of ``group update --add-vm``
  (``VmGroups.update`` with the VM's uuid: a VM the group has gets sinks for its
  disks without one): a sink made, the recovery site told, the mirror attached with its
  full copy as the disk's initial sync, the membership stored at both sites. Nothing
  half-attached is left if its mirror cannot start (the same undo).
- A disk Seawall cannot mirror (a CD-ROM, a read-only or shareable disk) stays an alert
  (``vm-change``) and is listed among the VM's skipped disks in ``group show``.
- A group at its protected site only. A failure is logged and tried again after
  ``RETRY_S`` (the alert stays meanwhile); one round never tries a group's VM twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from seawall.errors import SeawallError
from seawall.manager.groups.vm_groups import VmGroups

log = logging.getLogger(__name__)

RETRY_S = 300.0


class HotPlugs:
    def __init__(self, members: VmGroups, retry_s: float = RETRY_S) -> None:
        self.members = members
        self.retry_s = retry_s
        self._failed_s: dict[tuple[str, str], float] = {}  # (group, VM uuid) -> when

    def follow(self, documents: list[dict[str, Any]]) -> None:
        """Protect the mirrorable disks the documents' VM alerts report."""
        now_s = time.monotonic()
        for document in documents:
            if document.get("role") != "protected":
                continue
            group = str(document["group"])
            alerts = (document.get("agent") or {}).get("vm_alerts") or []
            for vm_uuid in sorted({a["uuid"] for a in alerts if a.get("protect")}):
                failed_s = self._failed_s.get((group, vm_uuid))
                if failed_s is not None and now_s - failed_s < self.retry_s:
                    continue
                self._protect(group, vm_uuid, now_s)

    def _protect(self, group: str, vm_uuid: str, now_s: float) -> None:
        try:
            changed = self.members.update(group, [], [], [vm_uuid], [])
        except SeawallError as exc:
            self._failed_s[(group, vm_uuid)] = now_s
            log.warning("group %s: the disks hot-plugged into VM %s are not protected: %s "
                        "(tried again in %g s)", group, vm_uuid, exc.message, self.retry_s)
            return
        self._failed_s.pop((group, vm_uuid), None)
        log.info("group %s: disks hot-plugged into VM %s protected: %s", group, vm_uuid,
                 ", ".join(changed["added"]))
