"""Live failovers and moves, run by the recovery site's manager (state machine: ``machine``).

Rules:
- Only at a group's recovery site; one failover operation per group (the database refuses
  a second). ``live`` writes the row (``starting``) first. With ``shutdown_source`` the
  protected site is asked to fence the group — its volumes stop taking writes and it
  ships up to a final checkpoint, which becomes the checkpoint — and the row says so
  *before* the request goes out, so whoever rolls back knows to unfence. Then the agent
  makes the live images; ``running`` once every image read back over NBD (the RTO).
  The group's pre-recovery script runs first of all, before any fence (its failure fails
  the operation, nothing made); the post one once the images read back, before
  ``running`` (its failure is a warning in ``error``; the images stay). See ``scripts``.
- ``commit``: ``committing`` is written before the agent is asked; the agent's commit is
  idempotent, so a retry or a restarted manager just asks again until it reports
  ``committed``; then the group's row turns ``failed-over`` (its volumes run here) and,
  with ``reverse_protect``, the group is protected back (``ReverseProtection``).
- ``rollback``: ``rolling-back`` first; the agent discards the images (replication and
  retention resume); a fenced source is unfenced. Journal and replica are untouched.
- A move is a live failover with the source shut down, committed at once.
- VMs: once the images read back, the checkpoint's VMs are defined and started at the
  recovery host in the group's boot order (``vm_boot``), their NICs on the operation's
  network map, the others on the group's failover network (see
  ``seawall.agent.failover.vm_boot`` for names and defaults); the report has each VM's
  state and times, and ``vms_ready_s``. Every network named is checked before anything
  is done. A VM that cannot come up is a warning in ``error``: the others still come up
  and the volumes are failed over. With ``shutdown_source`` (always in a move) the
  protected site first shuts the group's VMs down (``shutdown_timeout_s``, then powered
  off) and the report says how each went (``source_vms``); they stay defined and shut off.
- A commit with VMs holds them (persistent definitions, memory saved) before the agent
  consolidates, and resumes them after, on the committed volumes (same NBD URIs); a
  resume that fails is a warning, the commit stands. A rollback's agent destroys the VMs
  before it discards the images.
- Commit policy: a ``running`` live failover with a policy other than ``none`` is
  committed or rolled back by ``apply_policies`` once its deadline has passed.
- Restart: ``reconcile`` (at manager start and before each request) rolls back a
  ``starting`` operation, finishes a ``committing`` or ``rolling-back`` one, and marks a
  ``running`` one the agent no longer knows ``interrupted``.
- A group spanning agents fails over as any group, from the joined checkpoints: one run
  per member journal at the agent (``member_runs``), and a fence stops every member's
  writes before the lead takes the final group checkpoint (``SpanningGroups.fence``),
  awaited here until it is sealed everywhere. Reverse protection is refused for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from seawall.contract.agent import FailoverStart
from seawall.errors import Conflict, InvalidInput, NotFound, PeerError, SeawallError
from seawall.manager.groups.members import is_spanning
from seawall.manager.models import Group, RecoveryOperation, utc
from seawall.manager.recovery.machine import OperationEvent, OperationState, pick_checkpoint
from seawall.manager.recovery.member_runs import (
    committed_volumes,
    operation_of,
    plan_runs,
    run_names,
)
from seawall.manager.recovery.operations import (
    OperationRunner,
    new_operation_id,
    read_first_blocks,
    recovery_group,
)
from seawall.manager.recovery.store import add_step, describe
from seawall.manager.recovery.vm_boot import VmBooter, boot_plan, check_networks, vm_problems

log = logging.getLogger(__name__)

KINDS = ("failover-live", "move")
POLICIES = ("commit", "rollback", "none")
COMMIT_AFTER_MIN_S = 1.0
POLICY_PERIOD_S = 1.0
COMMIT_POLL_S = 0.2
COMMIT_TIMEOUT_S = 3600.0
FINAL_SEALED_TIMEOUT_S = 60.0
"""How long a spanning group's final checkpoint may take to be sealed in every member
journal here after the protected site took it."""
SHUTDOWN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LiveOptions:
    checkpoint: str = "latest"
    at: datetime | None = None
    commit_policy: str = "none"
    commit_after_s: float = 3600.0
    shutdown_source: bool = False
    reverse_protect: bool = False
    network_map: dict[str, str] = field(default_factory=dict)
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S


class FailoverLiveService(OperationRunner):
    kinds = KINDS
    reverse: Callable[[str], dict[str, Any]] | None = None
    """Set at wiring: protects a committed group back (``ReverseProtection.reverse``)."""

    # --- requests -----------------------------------------------------------------------

    def live(self, group_name: str, options: LiveOptions, user: str,
             kind: str = "failover-live") -> dict[str, Any]:
        started_s, started_at = time.monotonic(), datetime.now(UTC)
        if options.commit_policy not in POLICIES:
            raise InvalidInput(f"commit policy must be commit, rollback or none, "
                               f"not {options.commit_policy!r}")
        if options.commit_after_s < COMMIT_AFTER_MIN_S:
            raise InvalidInput("--commit-after must be at least 1s")
        group = recovery_group(self.groups, group_name, f"seawall {kind.replace('-', ' ')}")
        self._check_reverse(group, options.reverse_protect)
        check_networks(self.agent, options.network_map, group.failover_network)
        self.reconcile()
        if not options.shutdown_source:
            chosen = pick_checkpoint(self.groups.checkpoints(group_name), options.checkpoint,
                                     options.at, group_name)
        elif options.checkpoint != "latest" or options.at is not None:
            raise InvalidInput("with --shutdown-source the checkpoint is the final one "
                               "taken after the source stopped: no --checkpoint or --at")
        else:
            chosen = {"id": 0, "time_ns": 0, "name": ""}  # until the source's final one
        deadline = started_at + timedelta(seconds=options.commit_after_s)
        operation = RecoveryOperation(
            operation_id=new_operation_id("live" if kind == "failover-live" else kind,
                                          started_at),
            kind=kind, group_id=group.group_id, group_name=group.name,
            state=OperationState.STARTING.value, holds_group_id=group.group_id,
            checkpoint_id=chosen["id"], checkpoint_time_ns=chosen["time_ns"],
            checkpoint_name=chosen["name"], user=user, started_at=started_at, notes="",
            details={"options": {"checkpoint": options.checkpoint,
                                 "at": options.at.isoformat() if options.at else None,
                                 "commit_policy": options.commit_policy,
                                 "commit_after_s": options.commit_after_s,
                                 "shutdown_source": options.shutdown_source,
                                 "shutdown_timeout_s": options.shutdown_timeout_s,
                                 "network_map": options.network_map},
                     "commit_deadline": deadline.isoformat(), "source_fenced": False})
        add_step(operation, "requested", started_at)
        operation_id = operation.operation_id
        with self._tracking(operation_id):
            self.store.create(operation)
            try:
                # Before the fence: a failing pre script leaves the source untouched.
                self.scripts.pre(operation_id, kind, group,
                                 "final" if options.shutdown_source else str(chosen["id"]))
                if options.shutdown_source:
                    chosen = self._fence_source(operation_id, group,
                                                options.shutdown_timeout_s)
                images, vm_names = self._make_images(operation_id, group, chosen)
            except SeawallError as exc:
                self._roll_back_start(operation_id, group, exc.message)
                raise
            rto_s = round(time.monotonic() - started_s, 3)
            self.store.update(operation_id, step="every volume readable")
            details: dict[str, Any] = {"images": images}
            problems = self._boot_vms(operation_id, group, vm_names, options.network_map,
                                      started_s, details)
            warning = self.scripts.post(operation_id, kind, group, str(chosen["id"]), images)
            warnings = [w for w in (*problems, warning) if w]
            operation = self.store.transition(operation_id, OperationEvent.READY, rto_s=rto_s,
                                              error="; ".join(warnings) or None,
                                              details=details)
        return describe(operation)

    def commit(self, group_name: str, user: str, reverse_protect: bool = False) -> dict[str, Any]:
        group = recovery_group(self.groups, group_name, "seawall failover commit")
        self._check_reverse(group, reverse_protect)
        self.reconcile()
        holder = self._live_holder(group, "commit")
        with self._tracking(holder.operation_id):
            if holder.state == OperationState.RUNNING.value:
                holder = self.store.transition(
                    holder.operation_id, OperationEvent.COMMIT, step="commit requested",
                    details={"committed_by": user, "reverse_protect": reverse_protect})
            elif holder.state != OperationState.COMMITTING.value:
                raise Conflict(f"the live failover of group {group_name} is {holder.state}")
            return self._finish_commit(holder)

    def rollback(self, group_name: str, user: str) -> dict[str, Any]:
        group = recovery_group(self.groups, group_name, "seawall failover rollback")
        self.reconcile()
        holder = self._live_holder(group, "roll back")
        with self._tracking(holder.operation_id):
            if holder.state == OperationState.RUNNING.value:
                holder = self.store.transition(holder.operation_id, OperationEvent.ROLLBACK,
                                               step="rollback requested",
                                               details={"rolled_back_by": user})
            elif holder.state != OperationState.ROLLING_BACK.value:
                raise Conflict(f"the live failover of group {group_name} is {holder.state}")
            return self._finish_rollback(holder)

    def move(self, group_name: str, user: str, reverse_protect: bool,
             network_map: dict[str, str] | None = None,
             shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S) -> dict[str, Any]:
        """Planned migration: source shut down, final checkpoint, live failover, commit."""
        options = LiveOptions(shutdown_source=True, reverse_protect=reverse_protect,
                              network_map=network_map or {},
                              shutdown_timeout_s=shutdown_timeout_s)
        self.live(group_name, options, user, kind="move")
        return self.commit(group_name, user, reverse_protect)

    def status(self, group_name: str) -> dict[str, Any]:
        group, _ = self.groups.get(group_name)
        self.reconcile()
        holder = self.store.holder(group.group_id)
        if holder is None or holder.kind not in KINDS:
            return {"group": group_name, "operation": None}
        return {"group": group_name, "operation": describe(holder)}

    def apply_policies(self, now: datetime | None = None) -> None:
        """Commit or roll back the running live failovers whose deadline has passed."""
        now = now or datetime.now(UTC)
        for operation in self.store.active_of(KINDS):
            policy = operation.details["options"]["commit_policy"]
            deadline = datetime.fromisoformat(operation.details["commit_deadline"])
            if (operation.state != OperationState.RUNNING.value or policy == "none"
                    or utc(deadline) > now):
                continue
            try:
                if policy == "commit":
                    self.commit(operation.group_name, "commit policy")
                else:
                    self.rollback(operation.group_name, "commit policy")
            except SeawallError as exc:
                log.warning("commit policy of %s: %s", operation.operation_id, exc.message)

    # --- restart ------------------------------------------------------------------------

    def _reconcile_one(self, operation: RecoveryOperation, at_agent: bool) -> None:
        state = OperationState(operation.state)
        if state is OperationState.STARTING:
            group, _ = self.groups.get(operation.group_name)
            self._roll_back_start(operation.operation_id, group,
                                  "the site manager restarted while the failover was starting")
        elif state is OperationState.COMMITTING:
            self._finish_commit(operation)
        elif state is OperationState.ROLLING_BACK:
            self._finish_rollback(operation)
        elif state is OperationState.RUNNING and not at_agent:
            self._report(self.store.transition(
                operation.operation_id, OperationEvent.LOST, step="images lost",
                error="the recovery site's agent no longer has this live failover"))

    def _at_agent(self) -> set[str]:
        return {operation_of(run.operation_id) for run in self.agent.live_failovers()}

    # --- steps --------------------------------------------------------------------------

    @staticmethod
    def _check_reverse(group: Group, reverse_protect: bool) -> None:
        if reverse_protect and is_spanning(group.volumes):
            raise Conflict(f"group {group.name} spans agents: reverse protection is not "
                           "available for such groups yet (fail over without it)")

    def _live_holder(self, group: Group, doing: str) -> RecoveryOperation:
        holder = self.store.holder(group.group_id)
        if holder is None or holder.kind not in KINDS:
            raise Conflict(f"group {group.name} is not failed over live: nothing to {doing} "
                           "(`seawall failover live` first)")
        return holder

    def _fence_source(self, operation_id: str, group: Group,
                      shutdown_timeout_s: float) -> dict[str, Any]:
        """Shut the source's VMs down, stop it taking writes; its final checkpoint, durable
        here."""
        self.store.update(operation_id, step="stopping the source", source_fenced=True)
        try:
            final = self.groups.at_protected_agent(
                group.name, "fence", {"name": f"failover {operation_id}",
                                      "shutdown_timeout_s": shutdown_timeout_s})
        except PeerError as exc:
            raise PeerError(
                f"the protected site did not stop the group's writes ({exc.message}); "
                "fail over without --shutdown-source to recover from the journal as it is"
            ) from None
        chosen = self._offered(group, final["id"])
        if final.get("vms"):
            self.store.update(operation_id, step="source VMs shut down",
                              source_vms=final["vms"])
        self.store.update(operation_id, step="source stopped, final checkpoint durable")
        self.store.set_checkpoint(operation_id, chosen)
        return chosen

    def _offered(self, group: Group, checkpoint_id: int) -> dict[str, Any]:
        """Checkpoint ``checkpoint_id`` as offered here; a spanning group's once its marker
        is sealed in every member journal (the seals follow the markers)."""
        deadline_s = time.monotonic() + FINAL_SEALED_TIMEOUT_S
        while True:
            try:
                return pick_checkpoint(self.groups.checkpoints(group.name),
                                       str(checkpoint_id), None, group.name)
            except NotFound:
                if not is_spanning(group.volumes) or time.monotonic() > deadline_s:
                    raise
            time.sleep(COMMIT_POLL_S)

    def _make_images(self, operation_id: str, group: Group,
                     checkpoint: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """The live images, each read once over NBD, and the checkpoint's VMs (booted only
        for a group on one agent: a spanning group's runs are several, see the README)."""
        runs = plan_runs(operation_id, group.group_id, checkpoint)
        self.store.update(operation_id, agent_runs=[name for name, _, _ in runs])
        images: list[dict[str, Any]] = []
        vm_names: list[str] = []
        for name, journal, marker in runs:  # one per member journal of a spanning group
            described = self.agent.start_live_failover(FailoverStart(
                operation_id=name, group_id=journal, checkpoint=marker)).model_dump()
            images += described["images"]
            vm_names += described.get("vms", [])
        if len(runs) > 1:
            vm_names = []
        self.store.update(operation_id, step="images exported")
        read_first_blocks(images)
        return images, vm_names

    def _boot_vms(self, operation_id: str, group: Group, vm_names: list[str],
                  network_map: dict[str, str], started_s: float,
                  details: dict[str, Any]) -> list[str]:
        """Boot the checkpoint's VMs on the failover network into ``details``; what went
        wrong."""
        if not vm_names:
            return []

        def step(name: str) -> None:
            self.store.update(operation_id, step=name)

        booter = VmBooter(self.agent, step, live=True)
        details["vms"], details["vms_ready_s"] = booter.boot(
            operation_id, boot_plan(vm_names, group.boot_order), group.failover_network,
            network_map, started_s)
        return vm_problems(details["vms"])

    def _roll_back_runs(self, operation: RecoveryOperation) -> None:
        for name in run_names(operation):
            with contextlib.suppress(NotFound):
                self.agent.roll_back_live_failover(name)

    def _roll_back_start(self, operation_id: str, group: Group, error: str) -> None:
        operation = self.store.get(operation_id)
        self._roll_back_runs(operation)
        if operation.details.get("source_fenced"):
            error += self._unfence(group.name)
        self._report(self.store.transition(operation_id, OperationEvent.FAIL,
                                           step="rolled back", error=error))

    def _unfence(self, group_name: str) -> str:
        """Let the source take writes again; what went wrong, to add to the report."""
        try:
            self.groups.unfence(group_name)
        except SeawallError as exc:
            return (f"; the protected site's volumes are still read-only ({exc.message}): run "
                    f"`seawall group unfence {group_name}` there")
        return ""

    def _finish_commit(self, operation: RecoveryOperation) -> dict[str, Any]:
        operation_id = operation.operation_id
        booted = any("domain" in vm for vm in operation.details.get("vms", []))
        if booted:  # saved before their disks' connections drop (see the rules)
            self.agent.hold_live_vms(operation_id)
            self.store.update(operation_id, step="VMs saved")
        for name in run_names(operation):
            self._commit_run(name)
        served_as = {image["volume"]: image["name"] for image in operation.details["images"]}
        group, _ = self.groups.get(operation.group_name)
        self.groups.set_role(operation.group_id, "failed-over",
                             committed_volumes(group.volumes, served_as))
        error = operation.error
        if booted:
            try:
                self.agent.resume_live_vms(operation_id)
                self.store.update(operation_id, step="VMs resumed on the committed volumes")
            except SeawallError as exc:
                error = "; ".join(filter(None, (error, (
                    f"the VMs could not be resumed ({exc.message}): they are defined at the "
                    "recovery host with their memory saved: `virsh start` them there"))))
        final = self.store.transition(operation_id, OperationEvent.COMMITTED,
                                      step="images consolidated into volumes", error=error)
        report = self._report(final)
        if final.details.get("reverse_protect") and self.reverse is not None:
            report["reverse"] = self.reverse(final.group_name)
        return report

    def _commit_run(self, name: str) -> None:
        """Commit run ``name`` at the agent and wait until it is committed."""
        try:
            self.agent.commit_live_failover(name)
        except NotFound:
            return  # committed by an earlier agent process: the group is gone from it
        deadline_s = time.monotonic() + COMMIT_TIMEOUT_S
        while True:
            try:
                run = self.agent.live_failover(name).model_dump()
            except NotFound:
                return
            if run["state"] == "committed":
                return
            if run.get("error"):
                raise PeerError(f"commit of {name} failed at the agent: {run['error']}; "
                                "`seawall failover commit` tries again")
            if time.monotonic() > deadline_s:
                raise PeerError(f"commit of {name} did not finish in time")
            time.sleep(COMMIT_POLL_S)

    def _finish_rollback(self, operation: RecoveryOperation) -> dict[str, Any]:
        self._roll_back_runs(operation)
        error = self._unfence(operation.group_name) if operation.details.get(
            "source_fenced") else ""
        final = self.store.transition(operation.operation_id, OperationEvent.ROLLED_BACK,
                                      step="images discarded, replication resumed",
                                      error=error.lstrip("; ") or operation.error)
        return self._report(final)


class CommitPolicyTimer:
    """A thread that applies the commit policies of live failovers every second."""

    def __init__(self, service: FailoverLiveService) -> None:
        self._service = service
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-policy", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(POLICY_PERIOD_S):
            try:
                self._service.apply_policies()
            except SeawallError as exc:  # e.g. the agent is restarting: next round
                log.warning("commit policies not applied: %s", exc.message)
