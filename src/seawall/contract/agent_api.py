"""``AgentApi``: the agent's control API as the site manager calls it, one method a route.

Rules and invariants:
- Every request is built from its model in ``seawall.contract.agent`` and every answer is
  validated into its model here, on the manager's side: an agent that answers something
  else is a ``PeerError`` naming the route, not a ``KeyError`` somewhere later.
- Path ids are quoted; a route whose path names a group is given the id of the body's
  group (``spec.group_id``), so the two cannot differ from this side.
- Transport, deadlines and the mapping of error answers are the ``JsonClient``'s.
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter, ValidationError

from seawall.contract.agent import (
    Checkpoint,
    CheckpointTag,
    Coordination,
    ExportCreate,
    ExportDescription,
    FailoverRun,
    FailoverStart,
    FenceRequest,
    GroupRemoved,
    GroupStatus,
    Health,
    MembersChanged,
    PathsCheck,
    PathsChecked,
    PinForget,
    PinsLeft,
    ProtectedMembers,
    ProtectionChange,
    ProtectionSpec,
    RecoveryMembers,
    RecoveryMembersChanged,
    RecoverySpec,
    RetentionChange,
    ScriptOutcome,
    ScriptRun,
    TaggedCheckpoint,
    VolumeAdd,
    VolumeCreate,
    VolumeInfo,
    VolumeRemoved,
    dump,
    fence_deadline_s,
)
from seawall.contract.recovered_vms import (
    RecoveredDomains,
    RecoveredVm,
    RecoveryNetworks,
    VmBoot,
    VmDefine,
    VmDefined,
)
from seawall.contract.vms import SinkCreate, VmConfigView, VmListing
from seawall.errors import InvalidInput, PeerError
from seawall.http import JsonClient

AnswerT = TypeVar("AnswerT")
VM_HOLD_DEADLINE_S = 600.0
"""Saving (or restoring) the memory of a failover's VMs: gigabytes written to disk."""


def _id(text: str) -> str:
    return quote(text, safe="")


class AgentApi:
    """The typed face of one agent's control API (over the manager's ``JsonClient``)."""

    def __init__(self, client: JsonClient) -> None:
        self.client = client

    def _answer(self, shape: type[AnswerT], route: str, answer: Any) -> AnswerT:
        try:
            return TypeAdapter(shape).validate_python(answer)
        except ValidationError as exc:
            raise PeerError(f"the agent's answer to {route} is not what the contract says: "
                            f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None

    def _call(self, shape: type[AnswerT], method: str, path: str,
              body: BaseModel | None = None, deadline_s: float | None = None,
              **params: Any) -> AnswerT:
        # Only a call with a deadline of its own names one (fakes in tests take the rest).
        deadline = {} if deadline_s is None else {"timeout_s": deadline_s}
        answer = self.client.request(method, path, json=None if body is None else dump(body),
                                     params={k: v for k, v in params.items() if v is not None}
                                     or None, **deadline)
        return self._answer(shape, f"{method} {path}", answer)

    # --- health, volumes, pins -----------------------------------------------------------

    def health(self) -> Health:
        return self._call(Health, "GET", "/health")

    def volumes(self) -> list[VolumeInfo]:
        return self._call(list[VolumeInfo], "GET", "/volumes")

    def create_volume(self, request: VolumeCreate) -> VolumeInfo:
        return self._call(VolumeInfo, "POST", "/volumes", request)

    def add_volume(self, request: VolumeAdd) -> VolumeInfo:
        return self._call(VolumeInfo, "POST", "/volumes/add", request)

    def vms(self) -> VmListing:
        return self._call(VmListing, "GET", "/vms")

    def remove_volume(self, name: str) -> VolumeRemoved:
        return self._call(VolumeRemoved, "DELETE", f"/volumes/{_id(name)}")

    def create_sink(self, request: SinkCreate) -> VolumeInfo:
        return self._call(VolumeInfo, "POST", "/volumes/sinks", request)

    def forget_pin(self, cert_pem: str) -> PinsLeft:
        return self._call(PinsLeft, "POST", "/pins/forget", PinForget(cert_pem=cert_pem))

    def run_script(self, request: ScriptRun) -> ScriptOutcome:
        return self._call(ScriptOutcome, "POST", "/scripts/run", request)

    def check_paths(self, paths: PathsCheck) -> PathsChecked:
        return self._call(PathsChecked, "POST", "/paths/check", paths)

    # --- groups --------------------------------------------------------------------------

    def protect(self, spec: ProtectionSpec) -> GroupStatus:
        return self._call(GroupStatus, "PUT", f"/protected/{_id(spec.group_id)}", spec)

    def update_protection(self, group_id: str, change: ProtectionChange) -> GroupStatus:
        return self._call(GroupStatus, "PATCH", f"/protected/{_id(group_id)}", change)

    def recover(self, spec: RecoverySpec) -> GroupStatus:
        return self._call(GroupStatus, "PUT", f"/recovering/{_id(spec.group_id)}", spec)

    def update_retention(self, group_id: str, change: RetentionChange) -> GroupStatus:
        return self._call(GroupStatus, "PATCH", f"/recovering/{_id(group_id)}", change)

    def change_protected_members(self, group_id: str,
                                 members: ProtectedMembers) -> MembersChanged:
        return self._call(MembersChanged, "PUT", f"/protected/{_id(group_id)}/volumes", members)

    def change_recovery_members(self, group_id: str,
                                members: RecoveryMembers) -> RecoveryMembersChanged:
        return self._call(RecoveryMembersChanged, "PUT", f"/recovering/{_id(group_id)}/volumes",
                          members)

    def set_coordination(self, group_id: str, coordination: Coordination) -> GroupStatus:
        return self._call(GroupStatus, "PUT", f"/protected/{_id(group_id)}/coordination",
                          coordination)

    def unprotect(self, group_id: str) -> GroupRemoved:
        return self._call(GroupRemoved, "DELETE", f"/protected/{_id(group_id)}")

    def remove_recovery(self, group_id: str, keep_replicas: bool,
                        checkpoint: int | None = None) -> GroupRemoved:
        return self._call(GroupRemoved, "DELETE", f"/recovering/{_id(group_id)}",
                          keep_replicas=keep_replicas or None, checkpoint=checkpoint)

    def group_status(self, group_id: str) -> GroupStatus:
        return self._call(GroupStatus, "GET", f"/groups/{_id(group_id)}/status")

    def checkpoints(self, group_id: str, newest: int | None = None) -> list[Checkpoint]:
        return self._call(list[Checkpoint], "GET", f"/groups/{_id(group_id)}/checkpoints",
                          newest=newest or None)

    def vm_configs(self, group_id: str, checkpoint: str) -> list[VmConfigView]:
        return self._call(list[VmConfigView], "GET", f"/groups/{_id(group_id)}/vm-configs",
                          checkpoint=checkpoint)

    def vm_config(self, group_id: str, vm: str, checkpoint: str) -> VmConfigView:
        return self._call(VmConfigView, "GET", f"/groups/{_id(group_id)}/vms/{_id(vm)}",
                          checkpoint=checkpoint)

    def tag(self, group_id: str, request: CheckpointTag) -> TaggedCheckpoint:
        return self._call(TaggedCheckpoint, "POST", f"/groups/{_id(group_id)}/checkpoints",
                          request)

    def fence(self, group_id: str, request: FenceRequest) -> TaggedCheckpoint:
        return self._call(TaggedCheckpoint, "POST", f"/groups/{_id(group_id)}/fence", request,
                          deadline_s=fence_deadline_s(request))

    def unfence(self, group_id: str) -> GroupStatus:
        return self._call(GroupStatus, "POST", f"/groups/{_id(group_id)}/unfence")

    def resync(self, group_id: str) -> GroupStatus:
        return self._call(GroupStatus, "POST", f"/groups/{_id(group_id)}/resync")

    def reverse(self, spec: RecoverySpec) -> GroupStatus:
        return self._call(GroupStatus, "POST", f"/groups/{_id(spec.group_id)}/reverse", spec)

    # --- exports -------------------------------------------------------------------------

    def create_export(self, request: ExportCreate) -> ExportDescription:
        return self._call(ExportDescription, "POST", "/exports", request)

    def stop_export(self, name: str) -> ExportDescription:
        return self._call(ExportDescription, "DELETE", f"/exports/{_id(name)}")

    def exports(self) -> list[ExportDescription]:
        return self._call(list[ExportDescription], "GET", "/exports")

    # --- failover tests and live failovers -----------------------------------------------

    def failover_tests(self) -> list[FailoverRun]:
        return self._call(list[FailoverRun], "GET", "/failover-tests")

    def start_failover_test(self, request: FailoverStart) -> FailoverRun:
        return self._call(FailoverRun, "POST", "/failover-tests", request)

    def stop_failover_test(self, operation_id: str) -> FailoverRun:
        return self._call(FailoverRun, "DELETE", f"/failover-tests/{_id(operation_id)}")

    def boot_test_vm(self, operation_id: str, request: VmBoot) -> RecoveredVm:
        return self._call(RecoveredVm, "POST", f"/failover-tests/{_id(operation_id)}/vms",
                          request)

    def define_vm(self, request: VmDefine) -> VmDefined:
        return self._call(VmDefined, "POST", "/vms/definitions", request)

    def recovery_networks(self) -> RecoveryNetworks:
        return self._call(RecoveryNetworks, "GET", "/recovery-networks")

    def test_vms(self, operation_id: str) -> list[RecoveredVm]:
        return self._call(list[RecoveredVm], "GET",
                          f"/failover-tests/{_id(operation_id)}/vms")

    def live_failovers(self) -> list[FailoverRun]:
        return self._call(list[FailoverRun], "GET", "/failover-live")

    def start_live_failover(self, request: FailoverStart) -> FailoverRun:
        return self._call(FailoverRun, "POST", "/failover-live", request)

    def live_failover(self, operation_id: str) -> FailoverRun:
        return self._call(FailoverRun, "GET", f"/failover-live/{_id(operation_id)}")

    def commit_live_failover(self, operation_id: str) -> FailoverRun:
        return self._call(FailoverRun, "POST", f"/failover-live/{_id(operation_id)}/commit")

    def roll_back_live_failover(self, operation_id: str) -> FailoverRun:
        return self._call(FailoverRun, "DELETE", f"/failover-live/{_id(operation_id)}")

    def boot_live_vm(self, operation_id: str, request: VmBoot) -> RecoveredVm:
        return self._call(RecoveredVm, "POST", f"/failover-live/{_id(operation_id)}/vms",
                          request)

    def live_vms(self, operation_id: str) -> list[RecoveredVm]:
        return self._call(list[RecoveredVm], "GET", f"/failover-live/{_id(operation_id)}/vms")

    def hold_live_vms(self, operation_id: str) -> RecoveredDomains:
        """Commit, before: the VMs persistent and saved (minutes for large memories)."""
        return self._call(RecoveredDomains, "POST",
                          f"/failover-live/{_id(operation_id)}/vms/hold",
                          deadline_s=VM_HOLD_DEADLINE_S)

    def resume_live_vms(self, operation_id: str) -> RecoveredDomains:
        return self._call(RecoveredDomains, "POST",
                          f"/failover-live/{_id(operation_id)}/vms/resume",
                          deadline_s=VM_HOLD_DEADLINE_S)


def at_agent(api: AgentApi, group_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """A protected group's ``action`` as the recovery site forwards it by name (``fence``,
    ``unfence``, ``resync``, ``checkpoints``: a tag), through its contract call."""
    if action == "checkpoints":
        return api.tag(group_id, CheckpointTag.model_validate(body)).model_dump()
    if action == "fence":
        return api.fence(group_id, FenceRequest.model_validate(body)).model_dump()
    if action == "unfence":
        return api.unfence(group_id).model_dump()
    if action == "resync":
        return api.resync(group_id).model_dump()
    raise InvalidInput(f"no group action {action!r} at an agent")
