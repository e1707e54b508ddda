"""SourceFailover: a protected group's side of a failover, at its source site's agent.

Rules and invariants:
- ``fence`` (for ``failover live --shutdown-source`` and ``move``) saves the group as
  fenced *before* its volumes turn read-only and their NBD clients are dropped, so a
  restarted agent keeps them read-only; then it tags a final checkpoint once no sync runs
  and waits until the recovery site has it durable: that checkpoint holds every write the
  volumes took. ``unfence`` (a rollback) lets them take writes again.
- With ``shutdown_timeout_s`` the group's VMs are first shut down through the hypervisor
  (all at once; each powered off if it is not down by then), *before* the fence: a
  guest's last writes (its unmount, its sync) still go through its write-blocking
  mirrors, which acknowledge a write only once the sink has it, so when the guest is off
  the stream holds every write it made and the final checkpoint holds its disks as it
  left them. Its mirrors' end is no loss then (``group.vms_stopping``: the splitter does
  not sync its files, and the final checkpoint never waits for such a sync). A group
  that is fenced already (a retry) shuts nothing down again. The VMs stay defined and
  shut off: nothing here starts them again; an unfence (a rollback) compares their disk
  files with the recovery site, as for any shut-off VM.
- ``reverse`` turns the group around after a commit at the recovery site: protection
  stops, the old volumes are no longer served (any write they took since the failover is
  overwritten by the first sync) and become the replicas of the reversed group, received
  here from the committed site under the same group id; one state save switches over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Protocol

from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.quiesce import vms_of
from seawall.agent.protect.shipper import Shipper
from seawall.agent.protect.volumes import FileVolume
from seawall.contract.agent import RecoverySpec
from seawall.errors import InvalidInput, NotFound
from seawall.hypervisor.base import Hypervisor

log = logging.getLogger(__name__)


class SourceFailoverHost(Protocol):
    """What the source side of a failover asks of the agent
    (``seawall.agent.service.Agent``): its collections change only through these."""

    hypervisor: Hypervisor | None

    def protection(self, group_id: str) -> tuple[ProtectedGroup, Shipper] | None: ...

    def save_state(self) -> None: ...

    def group_status(self, group_id: str) -> dict[str, Any]: ...

    def disconnect_export(self, name: str) -> None: ...

    def protection_to_recovery(self, spec: RecoverySpec) -> dict[str, Any]:
        """The group's protection (stopped) and volumes go; the recovery group ``spec``
        comes, in one state save; its status."""


class SourceFailover:
    def __init__(self, host: SourceFailoverHost) -> None:
        self._host = host

    def _group(self, group_id: str) -> ProtectedGroup:
        entry = self._host.protection(group_id)
        if entry is None:
            raise NotFound(f"group {group_id} is not protected by this agent")
        return entry[0]

    async def fence(self, group_id: str, checkpoint_name: str, timeout_s: float,
                    shutdown_timeout_s: float | None = None) -> dict[str, Any]:
        """Stop the group's volumes taking writes, ship the last ones up to a final checkpoint.

        Saved before the volumes turn read-only, so a restarted agent keeps them so."""
        group = self._group(group_id)
        shutdowns = []
        if shutdown_timeout_s is not None and not group.spec.fenced:
            group.vms_stopping = True
            try:
                shutdowns = await self._shut_down(group, shutdown_timeout_s)
            finally:
                group.vms_stopping = False
        if not group.spec.fenced:
            group.spec.fenced = True
            self._host.save_state()
            self.set_read_only(group, True)
        entry = await group.final_checkpoint(checkpoint_name, timeout_s)
        return {"id": entry.seq, "time_ns": entry.time_ns, "name": entry.name,
                "vms": shutdowns}

    async def _shut_down(self, group: ProtectedGroup, timeout_s: float) -> list[dict[str, Any]]:
        """Shut down every VM of ``group`` (see the rules); how each went."""
        uuids = vms_of(group.volumes)
        hypervisor = self._host.hypervisor
        if not uuids:
            return []
        if hypervisor is None:
            raise InvalidInput(f"group {group.spec.name} protects VMs but this agent runs "
                               "without a hypervisor: they cannot be shut down")
        names = {uuid: (await hypervisor.vm(uuid)).name for uuid in uuids}
        done = await asyncio.gather(*(hypervisor.shutdown_vm(uuid, timeout_s)
                                      for uuid in uuids))
        reports = []
        for uuid, shutdown in zip(uuids, done, strict=True):
            log.info("group %s: VM %s %s", group.spec.name, names[uuid], shutdown.describe())
            reports.append({"vm": names[uuid], "uuid": uuid, "result": shutdown.result,
                            "detail": shutdown.describe(),
                            "seconds": round(shutdown.seconds, 3)})
        return reports

    def unfence(self, group_id: str) -> dict[str, Any]:
        group = self._group(group_id)
        if group.spec.fenced:
            group.spec.fenced = False
            self._host.save_state()
            self.set_read_only(group, False)
            off = sorted(group.mirrors.offline)
            if off:  # shut off while fenced: compared now, as any shut-off VM's disks
                group.copy_sinks(off, "unfenced: VM shut off, read from its disk files")
        return self._host.group_status(group_id)

    def set_read_only(self, group: ProtectedGroup, read_only: bool) -> None:
        for volume in group.volumes:
            volume.info = dataclasses.replace(volume.info, read_only=read_only)
            if read_only:
                self._host.disconnect_export(volume.name)  # clients see the disk go away

    async def reverse(self, spec: RecoverySpec) -> dict[str, Any]:
        """Turn a failed-over group around: its old source volumes become the replicas of
        the reversed group, which the recovered site protects back to us (a delta sync)."""
        group, shipper = self._host.protection(spec.group_id) or (None, None)
        if group is None or shipper is None:
            raise NotFound(f"group {spec.name} is not protected by this agent")
        if len(spec.volumes) != len(group.volumes):
            raise InvalidInput(f"the reversed group has {len(spec.volumes)} volumes, "
                               f"this site's has {len(group.volumes)}")
        old = sorted(group.spec.volumes, key=lambda v: v.index)
        sizes = [v.size_bytes for v in sorted(spec.volumes, key=lambda v: v.index)]
        if sizes != [v.size_bytes for v in old]:
            raise InvalidInput(f"the reversed group's volume sizes {sizes} differ from this "
                               f"site's {[v.size_bytes for v in old]}")
        served = {volume.name: volume for volume in group.volumes
                  if isinstance(volume, FileVolume)}
        if len(served) != len(group.volumes):
            raise InvalidInput(f"group {spec.name} protects VM disks (capture sinks, no files "
                               "here): reversing it is not supported yet")
        paths = {volume.name: served[previous.name].path
                 for volume, previous in zip(sorted(spec.volumes, key=lambda v: v.index), old,
                                             strict=True)}
        await shipper.stop()
        await group.stop()
        return self._host.protection_to_recovery(spec.model_copy(update={"replica_paths": paths}))
