"""The agent's control API: every request body and answer, as both sides validate them.

Rules and invariants:
- The site manager builds each request from these models (no hand-built dicts) and reads
  each answer into them (``seawall.contract.agent_api.AgentApi``); the agent's routes take
  the same models as bodies and declare them as their answers (FastAPI ``response_model``),
  so a field renamed on one side fails on both at once.
- This module imports neither the agent nor the manager: both import it.
- Requests forbid unknown fields (a misspelt setting is refused, not ignored), except the
  two group specs, which are also saved state and must load older files; answers allow
  them (a newer agent may say more than an older manager reads).
- A route whose path names a group (``PUT /protected/{group_id}``) takes a body naming the
  same group; ``same_id`` refuses a mismatch before anything changes.
- ``ProtectionSpec`` and ``RecoverySpec`` are also what the agent saves of each group
  (``seawall.agent.state``): defaults keep older state files loadable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from seawall.errors import InvalidInput

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
FENCE_TIMEOUT_S = 20.0
"""Within the 30 s a manager waits for its peer: the peer call carries the answer back."""


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


def same_id(path_id: str, body_id: str, what: str = "group") -> None:
    """Refuse a body about another ``what`` than the route's path names."""
    if path_id != body_id:
        raise InvalidInput(f"the path names {what} {path_id!r} but the body {body_id!r}")


# --- groups: what the agent protects and recovers ----------------------------------------


class GroupVolume(BaseModel):
    index: int
    name: str
    size_bytes: int


class RetiredVolume(GroupVolume):
    """A volume removed from a group whose history the recovery site still keeps: it reads
    back at the checkpoints that include it until they age out. ``removed_after_seq``: the
    protected site's last seq at the removal (None until known: every later checkpoint is
    then taken to include it); ``added_after_seq`` as ``RecoverySpec.added_after_seq``."""

    removed_after_seq: int | None = None
    added_after_seq: int | None = None


class CoordinationMember(BaseModel):
    """Another member agent of a group spanning agents, as its lead reaches it."""

    agent: str
    group_id: str
    """The member's own stream (its protected group's id at that agent)."""
    control_url: str
    cert_pem: str
    """The member agent's certificate: the only one its control API may present."""


class Coordination(BaseModel):
    """This agent's part in a group spanning agents (``seawall.agent.protect.coordination``).

    Every member holds its acknowledgements at a checkpoint; the lead also takes the
    checkpoints, on its timer and on request, by calling the other ``members``."""

    group_id: str
    """The whole group's id (each member's stream has its own ``ProtectionSpec.group_id``)."""
    lead: bool
    members: list[CoordinationMember] = []
    """The other members (the lead's list; empty at the others)."""


class ProtectionSpec(BaseModel):
    """``PUT /protected/{group_id}``: a group this agent protects, shipped to ``target``."""

    group_id: str
    name: str
    volumes: list[GroupVolume]
    target_host: str
    target_port: int
    target_cert_pem: str | None = None
    """The recovery site's certificate, pinned at pairing; None only in state from before
    pairing exchanged certificates, and such a group does not connect (``Shipper``)."""
    checkpoint_interval_s: float = 5.0
    codec: Literal["zstd", "lz4", "none"] = "zstd"
    priority: Literal["high", "medium", "low"] = "medium"
    """Its share of the site's throttled bandwidth (``seawall.wan.throttle``)."""
    quiesce_every_s: float = 0.0
    """Take an application-consistent checkpoint this often (``seawall.agent.protect.
    quiesce``); 0: none."""
    preseeded: bool = False
    """The recovery site's replicas were seeded from a copy: the first sync compares."""
    fenced: bool = False
    """Stopped for a failover: the volumes take no writes (read-only) until unfenced."""
    coordination: Coordination | None = None
    """Set when the group spans agents: checkpoints are coordinated, not timed here."""


class LiveFailoverSpec(BaseModel):
    """A live failover of a recovery group (``seawall.agent.failover.live``)."""

    operation_id: str
    checkpoint_seq: int
    images: dict[str, str]
    """Volume name -> export name of its live image (and of the volume after commit)."""
    state: Literal["running", "committing", "consolidated"] = "running"


class RecoverySpec(BaseModel):
    """``PUT /recovering/{group_id}``: a group this agent receives (journal and replicas)."""

    group_id: str
    name: str
    source_site: str
    source_cert_pem: str | None = None
    """The protected site's certificate: the only one its sessions may present (None in
    state from before pairing exchanged certificates: no session is taken then)."""
    volumes: list[GroupVolume]
    # Retention (see seawall.journal.policy); defaults keep older state files loadable.
    history_s: float = 86400.0
    journal_max_bytes: int | None = None
    journal_warning_ratio: float = 0.75
    storage_dir: Path | None = None
    """Where the group's journal and replicas live (a directory per group in it); None: the
    site's data dir. Set at create: the journal does not move."""
    replica_paths: dict[str, Path] = {}
    """Pre-seeded replicas by volume name (others live in the group's directory)."""
    live: LiveFailoverSpec | None = None
    """Set while the group is failed over live: replication and retention stop."""
    retired: list[RetiredVolume] = []
    """Volumes removed from the group whose history its journal still holds (their
    indexes are never reused)."""
    added_after_seq: dict[int, int] = {}
    """Members added after the group was made, by index: the seq after which the
    checkpoints include them (a lower bound until the protected site's is known)."""
    unsettled: list[int] = []
    """Indexes whose ``added_after_seq``/``removed_after_seq`` wait for the protected site's
    seq at the change (``RecoveryMembers.changed_after_seq``)."""


class ProtectionChange(Request):
    """``PATCH /protected/{id}``: settings that change in place (``ProtectionSpec``'s names)."""

    checkpoint_interval_s: float | None = Field(default=None, ge=0.1, le=3600.0)
    codec: Literal["zstd", "lz4", "none"] | None = None
    priority: Literal["high", "medium", "low"] | None = None
    quiesce_every_s: float | None = Field(default=None, ge=0.0, le=86400.0)


class RetentionChange(Request):
    """``PATCH /recovering/{id}``: retention (``RecoverySpec``'s names); its policy checks it."""

    history_s: float
    journal_max_bytes: int | None
    journal_warning_ratio: float


class ProtectedMembers(Request):
    """``PUT /protected/{id}/volumes``: the group's members from now on (indexes of kept
    members unchanged, new ones never used before in the group)."""

    volumes: list[GroupVolume] = Field(min_length=1, max_length=64)


class MembersChanged(Answer):
    group_id: str
    last_seq: int
    """The seq issued last at the change: no record of a removed volume comes after it."""


class NewVolume(Request):
    name: str = Field(pattern=NAME_PATTERN)
    size_bytes: int = Field(gt=0)


class RecoveryMembers(Request):
    """``PUT /recovering/{id}/volumes``: the group's members from now on: ``volumes`` kept
    (their indexes; a member left out is retired, its history kept), then ``added`` (each
    given an index the group never used). ``forget``: names of members dropped with their
    replica (an addition taken back). ``changed_after_seq``: the protected site's last seq
    at the change just made, which settles which checkpoints include the volumes changed."""

    volumes: list[GroupVolume] = Field(max_length=64)
    added: list[NewVolume] = Field(default=[], max_length=64)
    forget: list[str] = Field(default=[], max_length=64)
    changed_after_seq: int | None = Field(default=None, ge=0)


class RecoveryMembersChanged(Answer):
    group_id: str
    volumes: list[GroupVolume]
    """The members, new ones with their indexes."""


class GroupRemoved(Answer):
    """``DELETE /protected/{id}`` or ``DELETE /recovering/{id}``: the group is gone here.
    ``kept``: volume name -> the plain raw file its replica is now (``keep_replicas``),
    consistent at checkpoint ``checkpoint`` (None: the journal had no consistent one)."""

    group_id: str
    kept: dict[str, str] = {}
    checkpoint: int | None = None


class VolumeRemoved(Answer):
    """``DELETE /volumes/{name}``: ``deleted`` is True when the volume's file was ours (made
    by ``volume create``) and is deleted; an added file or device is only forgotten."""

    name: str
    path: str
    deleted: bool


class PathsCheck(Request):
    """``POST /paths/check``: directories and scripts the recovery site must vouch for."""

    directories: list[str] = Field(default=[], max_length=16)
    scripts: list[str] = Field(default=[], max_length=16)


class PathsChecked(Answer):
    ok: bool


class GroupStatus(Answer):
    """A group's status, either side (the manager's monitoring reads the rest by name)."""

    group_id: str
    name: str
    role: Literal["protected", "recovery"]


class Checkpoint(Answer):
    """One entry of ``GET /groups/{id}/checkpoints`` (protected side: also ``tagged``,
    ``lost``; recovery side: ``consistent``, ``sealed_as``)."""

    id: int
    time_ns: int
    name: str
    replicated: bool
    consistency: Literal["crash", "application"] = "crash"


class CheckpointTag(Request):
    name: str = ""
    quiesce: bool = False
    """Freeze the group's guests' file systems around the marker (application-consistent;
    crash-consistent for a VM whose guest agent does not answer)."""


class VmShutdownReport(Answer):
    """How one VM of a fenced group went down (``hypervisor.power``)."""

    vm: str
    uuid: str
    result: Literal["clean", "forced", "off"]
    detail: str
    seconds: float


class TaggedCheckpoint(Answer):
    """A checkpoint just taken: tagged on request, or the final one of a fence."""

    id: int
    time_ns: int
    name: str
    consistency: Literal["crash", "application"] = "crash"
    notes: list[str] = []  # why a quiesced checkpoint is only crash-consistent
    vms: list[VmShutdownReport] = []  # a fence that shut the group's VMs down first


# --- volumes, exports, pins, health ------------------------------------------------------


class Health(Answer):
    status: str
    agent_id: str
    sink_connections: int = 0  # QEMU mirrors connected to capture sinks (the watchdog's cue)


class VolumeCreate(Request):
    name: str
    size_bytes: int = Field(gt=0)


class VolumeAdd(Request):
    name: str
    path: Path


class VolumeInfo(Answer):
    name: str
    size: int
    path: str  # "" for a sink
    nbd_uri: str
    group: str | None
    kind: Literal["file", "sink"] = "file"
    vm_uuid: str | None = None
    disk: str | None = None


class ExportCreate(Request):
    group_id: str
    volume: str
    checkpoint: str = "latest"


class ExportDescription(Answer):
    """A point-in-time export (``POST /exports``, ``GET /exports``, ``DELETE``)."""

    name: str
    uri: str
    group: str
    group_id: str
    volume: str
    checkpoint_id: int
    checkpoint_time_ns: int
    size_bytes: int
    created_ns: int


class PinForget(Request):
    cert_pem: str = Field(min_length=1, max_length=8192)


class PinsLeft(Answer):
    pinned: int


# --- failover ----------------------------------------------------------------------------


class FailoverStart(Request):
    """``POST /failover-tests`` and ``POST /failover-live``."""

    operation_id: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    group_id: str
    checkpoint: str = Field(min_length=1, max_length=32)
    scratch_max_bytes: int | None = Field(default=None, gt=0)
    members: dict[str, str] = Field(default_factory=dict)
    """A failover test of a group spanning agents: each member journal's id here -> its
    marker of the group checkpoint, the lead first (``group_id`` is then the group's own
    id, which names no journal here); empty for a one-agent group."""


class FailoverRun(Answer):
    """A failover test or live failover as the agent describes it."""

    operation_id: str
    group_id: str


class FenceRequest(Request):
    checkpoint_name: str = Field(default="", max_length=512)
    timeout_s: float = Field(default=FENCE_TIMEOUT_S, gt=0, le=3600)
    """How long the final checkpoint may take to be durable at the recovery site."""
    shutdown_timeout_s: float | None = Field(default=None, gt=0, le=86400)
    """Shut the group's VMs down first, powered off after this long; None: leave them."""


FENCE_AFTER_SHUTDOWN_S = 300.0
"""A fence's final checkpoint after its VMs shut down: their disks are then compared with
the recovery site from their files (a delta sync) before it can be taken."""
FENCE_CALL_MARGIN_S = 30.0


def fence_request(checkpoint_name: str, shutdown_timeout_s: float | None) -> FenceRequest:
    """The fence a failover asks of the protected site (``failover live`` / ``move``)."""
    if shutdown_timeout_s is None:
        return FenceRequest(checkpoint_name=checkpoint_name)
    return FenceRequest(checkpoint_name=checkpoint_name, timeout_s=FENCE_AFTER_SHUTDOWN_S,
                        shutdown_timeout_s=shutdown_timeout_s)


def fence_deadline_s(request: FenceRequest) -> float:
    """How long a fence call may take: the shutdown, the final checkpoint, a margin."""
    return request.timeout_s + (request.shutdown_timeout_s or 0.0) + FENCE_CALL_MARGIN_S


# --- recovery scripts (``seawall.agent.control.scripts``) ---------------------------------

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


class ScriptRun(Request):
    """``POST /scripts/run``: a script of the recovery site's scripts directory."""

    path: str = Field(min_length=1, max_length=4096)
    args: list[str] = Field(default=[], max_length=64)
    environment: dict[EnvName, str] = Field(default={}, max_length=64)
    timeout_s: float = Field(gt=0, le=3600)


class ScriptOutcome(Answer):
    """Every outcome of a script is an answer: exit code (negative: killed by that signal),
    ``timed_out``, ``duration_s``, the tail of its ``output``, ``error`` when it failed."""

    path: str
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float | None = None
    output: str = ""
    output_dropped_bytes: int = 0
    error: str | None = None


# --- coordinated checkpoints (a lead agent calls its members) ----------------------------


class CoordinationPrepare(Request):
    name: str = Field(default="", max_length=512)
    tagged: bool = False
    quiesce: bool = False  # freeze this member's guests from before its marker to RELEASE


class CoordinationPrepared(Answer):
    marker_seq: int
    time_ns: int


class CoordinationRelease(Request):
    marker_seq: int = Field(gt=0)
    group_checkpoint: int = Field(gt=0)


class CoordinationReleased(Answer):
    sealed: bool


class CoordinationAbort(Request):
    marker_seq: int = Field(gt=0)


class CoordinationAborted(Answer):
    aborted: bool


def dump(model: BaseModel) -> dict[str, Any]:
    """A request as JSON (paths as strings), unset defaults left to the agent's model."""
    return model.model_dump(mode="json", exclude_unset=True)
