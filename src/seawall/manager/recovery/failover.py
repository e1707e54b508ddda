"""Failover tests, run by the recovery site's manager over its agent's writable images.

Rules:
- Only at a group's recovery site; one failover operation per group (the database refuses
  a second, see ``OperationStore``); checkpoints are chosen by ``machine.pick_checkpoint``.
- ``start`` writes the row (``starting``) before it asks the agent for images, and moves
  it to ``running`` only once a first read of every image over NBD has succeeded: the
  measured RTO is from the request's arrival to that moment. A failure on the way
  discards what the agent made and ends the row ``failed``, with a report. The group's
  pre-recovery script runs before the images are asked for (its failure is such a
  failure), the post one after the first reads, before ``running`` (its failure is only
  a warning in ``error``); see ``scripts``.
- ``stop`` moves the row to ``stopping`` before asking the agent to discard the images,
  then to ``stopped``, and writes the report. An agent that no longer has the images
  (restarted meanwhile) is fine: they are gone, as asked.
- Restart: ``reconcile`` (at manager start and before every request) looks at the active
  rows no request of this process is working on: a ``starting`` one is rolled back
  (``failed``), a ``stopping`` one is finished, a ``running`` one whose images the agent
  no longer has (an agent restart ends tests) becomes ``interrupted``. Each gets its report.
- ``OperationRunner`` (``operations``) keeps the in-flight bookkeeping and reconciles.
- A group spanning agents is tested as any group: its checkpoints are the joined list
  (``GroupService.checkpoints``), and the agent makes every volume's image from its
  member's journal at that member's marker of the chosen checkpoint (``members``).
"""

from __future__ import annotations

import contextlib
import getpass
import time
from datetime import UTC, datetime
from typing import Any

from seawall.contract.agent import FailoverStart
from seawall.errors import Conflict, InvalidInput, NotFound, SeawallError
from seawall.manager.models import Group, RecoveryOperation
from seawall.manager.recovery.machine import OperationEvent, OperationState, pick_checkpoint
from seawall.manager.recovery.operations import (
    OperationRunner,
    new_operation_id,
    read_first_blocks,
    recovery_group,
)
from seawall.manager.recovery.store import add_step, describe
from seawall.manager.recovery.vm_boot import VmBooter, boot_plan, check_networks, vm_problems

KIND = "failover-test"
RESULTS = ("pass", "fail")


class FailoverTestService(OperationRunner):
    kinds = (KIND,)

    # --- requests -----------------------------------------------------------------------

    def start(self, group_name: str, checkpoint: str, scratch_max_bytes: int | None,
              user: str | None, at: datetime | None = None,
              network_map: dict[str, str] | None = None) -> dict[str, Any]:
        started_s, started_at = time.monotonic(), datetime.now(UTC)
        group = recovery_group(self.groups, group_name, "seawall failover test")
        check_networks(self.agent, network_map or {}, group.test_network)
        self.reconcile()
        chosen = pick_checkpoint(self.groups.checkpoints(group_name), checkpoint, at,
                                 group_name)
        operation = RecoveryOperation(
            operation_id=new_operation_id("test", started_at), kind=KIND,
            group_id=group.group_id, group_name=group.name,
            state=OperationState.STARTING.value, holds_group_id=group.group_id,
            checkpoint_id=chosen["id"], checkpoint_time_ns=chosen["time_ns"],
            checkpoint_name=chosen["name"], user=user or getpass.getuser(),
            started_at=started_at, notes="",
            details={"options": {"checkpoint": checkpoint,
                                 "at": at.isoformat() if at else None,
                                 "scratch_max_bytes": scratch_max_bytes,
                                 "network_map": network_map or {}}},
        )
        add_step(operation, "requested", started_at)
        add_step(operation, "checkpoint chosen")
        operation_id = operation.operation_id
        with self._tracking(operation_id):
            self.store.create(operation)
            try:
                self.scripts.pre(operation_id, KIND, group, str(chosen["id"]))
                images, vm_names = self._make_images(operation_id, group, chosen,
                                                     scratch_max_bytes)
            except SeawallError as exc:
                # The agent may have made images even if its answer got lost: drop them.
                with contextlib.suppress(SeawallError):
                    self._discard_images(operation_id)
                self._report(self.store.transition(operation_id, OperationEvent.FAIL,
                                                   step="failed", error=exc.message))
                raise
            rto_s = round(time.monotonic() - started_s, 3)
            self.store.update(operation_id, step="every volume readable")
            details: dict[str, Any] = {"images": images}
            problems = self._boot_vms(operation_id, group, vm_names, network_map or {},
                                      started_s, details)
            warning = self.scripts.post(operation_id, KIND, group, str(chosen["id"]), images)
            warnings = [w for w in (*problems, warning) if w]
            operation = self.store.transition(operation_id, OperationEvent.READY, rto_s=rto_s,
                                              error="; ".join(warnings) or None,
                                              details=details)
        return describe(operation)

    def stop(self, group_name: str, result: str | None, notes: str,
             user: str | None) -> dict[str, Any]:
        if result is not None and result not in RESULTS:
            raise InvalidInput(f"result must be pass or fail, not {result!r}")
        group = recovery_group(self.groups, group_name, "seawall failover stop")
        self.reconcile()
        holder = self.store.holder(group.group_id)
        if holder is None or holder.kind != KIND:
            raise Conflict(f"no failover test of group {group_name} is running "
                           "(past ones: `seawall report list`)")
        if holder.state != OperationState.RUNNING.value:
            raise Conflict(f"the failover test of group {group_name} is {holder.state}: "
                           "try again in a moment")
        with self._tracking(holder.operation_id):
            operation = self.store.transition(
                holder.operation_id, OperationEvent.STOP, step="stop requested",
                result=result, notes=notes, details={"stopped_by": user or getpass.getuser()})
            return self._finish_stop(operation)

    def status(self, group_name: str) -> dict[str, Any]:
        """The group's running failover test with live scratch use, or None."""
        group = recovery_group(self.groups, group_name, "seawall failover status")
        self.reconcile()
        holder = self.store.holder(group.group_id)
        if holder is None or holder.kind != KIND:
            return {"group": group_name, "operation": None}
        operation = describe(holder)
        live = {t.operation_id: t.model_dump() for t in self.agent.failover_tests()}
        if holder.operation_id in live:
            operation["images"] = live[holder.operation_id]["images"]
            operation["scratch_alert"] = live[holder.operation_id]["scratch_alert"]
        return {"group": group_name, "operation": operation}

    # --- restart ------------------------------------------------------------------------

    def _at_agent(self) -> set[str]:
        return {t.operation_id for t in self.agent.failover_tests()}

    def _reconcile_one(self, operation: RecoveryOperation, at_agent: bool) -> None:
        operation_id, state = operation.operation_id, OperationState(operation.state)
        if state is OperationState.STARTING:
            if at_agent:
                self._discard_images(operation_id)
            self._report(self.store.transition(
                operation_id, OperationEvent.FAIL, step="rolled back",
                error="the site manager restarted while the test was starting; "
                      "its images were discarded"))
        elif state is OperationState.STOPPING:
            self._finish_stop(operation)
        elif state is OperationState.RUNNING and not at_agent:
            self._report(self.store.transition(
                operation_id, OperationEvent.LOST, step="images lost",
                error="the recovery site's agent restarted: that ends failover tests "
                      "and discards their scratch"))

    # --- helpers ------------------------------------------------------------------------

    def _make_images(self, operation_id: str, group: Group, checkpoint: dict[str, Any],
                     scratch_max_bytes: int | None) -> tuple[list[dict[str, Any]], list[str]]:
        """Images from the agent, each read once over NBD (the end of the RTO), and the
        names of the VMs whose configuration the checkpoint has."""
        markers = checkpoint.get("members") or {}  # a group spanning agents: each journal's
        test = self.agent.start_failover_test(FailoverStart(
            operation_id=operation_id, group_id=group.group_id,
            checkpoint=str(checkpoint["id"]), scratch_max_bytes=scratch_max_bytes,
            members={member: str(marker) for member, marker in markers.items()},
        )).model_dump()
        images: list[dict[str, Any]] = test["images"]
        self.store.update(operation_id, step="images exported")
        read_first_blocks(images)
        return images, list(test.get("vms", []))

    def _boot_vms(self, operation_id: str, group: Group, vm_names: list[str],
                  network_map: dict[str, str], started_s: float,
                  details: dict[str, Any]) -> list[str]:
        """Boot the checkpoint's VMs (``vm_boot``) into ``details``; what went wrong."""
        if not vm_names:
            return []

        def step(name: str) -> None:
            self.store.update(operation_id, step=name)

        booter = VmBooter(self.agent, step)
        details["vms"], details["vms_ready_s"] = booter.boot(
            operation_id, boot_plan(vm_names, group.boot_order), group.test_network,
            network_map, started_s)
        return vm_problems(details["vms"])

    def _finish_stop(self, operation: RecoveryOperation) -> dict[str, Any]:
        images = self._discard_images(operation.operation_id)
        details = {"images": images} if images is not None else {}
        final = self.store.transition(operation.operation_id, OperationEvent.STOPPED,
                                      step="images discarded", details=details)
        return self._report(final)

    def _discard_images(self, operation_id: str) -> list[dict[str, Any]] | None:
        """Ask the agent to drop the test's images; their last state, None if gone already."""
        try:
            test = self.agent.stop_failover_test(operation_id)
        except NotFound:
            return None
        images: list[dict[str, Any]] = test.model_dump()["images"]
        return images
