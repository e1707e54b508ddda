"""FailoverTests: the recovery agent's running failover tests and their writable images.

A failover test of a group gives every volume of the group a ``ScratchImage`` at one
checkpoint, exported over NBD read-write, while replication goes on into the journal.

Rules and invariants:
- At most one test per group here, and an operation id names one test: the site manager,
  which owns the operation's state machine, also keeps one failover operation per group.
- A group spanning agents has one journal per member here (``RecoverySpec`` of each
  member stream): its test is made of *parts*, one per member journal, each at that
  member's marker of the group checkpoint (``members``: stream id -> marker, the lead
  first; the lead's marker id is the group checkpoint's id). It holds every member
  journal, and its VMs are found in the journal of the member whose agent ran them.
- A test is made whole or not at all: if one volume's image cannot be made (checkpoint
  aged out, no space for a scratch file), the images already made are closed again.
- Stopping a test first drops the NBD clients of its images, then closes them (views
  released, scratch deleted).
- Tests live in this process only: an agent restart ends them (the scratch maps are in
  memory), and ``clear_leftovers`` at start deletes the scratch files they left. The
  manager sees the test missing and marks its operation ``interrupted``. (A live failover
  will need its overlay persisted; a test is a rehearsal and may end.)
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.images.scratch import ScratchImage
from seawall.agent.recover.group import RecoveryGroup
from seawall.config import SiteConfig
from seawall.contract.agent import NAME_PATTERN
from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.journal.journal import CheckpointInfo
from seawall.journal.overlay import BLOCK_BYTES
from seawall.wire.records import VmConfig

DEFAULT_SCRATCH_FRACTION = 0.10
DEFAULT_SCRATCH_MIN_BYTES = 64 << 20
"""Without ``scratch_max_bytes``, each volume's scratch may hold 10% of the volume, but at
least 64 MiB (and at most the volume's size), so that small volumes still get room."""


def default_scratch_limit_bytes(size_bytes: int) -> int:
    wanted = max(int(size_bytes * DEFAULT_SCRATCH_FRACTION), DEFAULT_SCRATCH_MIN_BYTES)
    return min(wanted, -(-size_bytes // BLOCK_BYTES) * BLOCK_BYTES)


@dataclass(frozen=True)
class TestPart:
    """One journal of the test's group at its checkpoint (a group spanning agents has one
    per member)."""

    group: RecoveryGroup
    checkpoint: CheckpointInfo


@dataclass
class FailoverTest:
    operation_id: str
    group_id: str
    parts: list[TestPart]
    """The lead member's first (the group's checkpoint id is its marker's)."""
    created_ns: int
    images: dict[str, tuple[str, ScratchImage]] = field(default_factory=dict)
    """Export name -> (volume name, image)."""

    @property
    def name(self) -> str:
        return self.parts[0].group.spec.name

    @property
    def checkpoint(self) -> CheckpointInfo:
        return self.parts[0].checkpoint

    def vm_configs(self) -> list[VmConfig]:
        """The configuration of every VM of the group at the test's checkpoint."""
        return [config for part in self.parts
                for config in part.group.journal.vm_configs_at(part.checkpoint.seq).values()]


class FailoverTests:
    def __init__(self, config: SiteConfig, groups: Callable[[str], RecoveryGroup],
                 disconnect: Callable[[str], int]) -> None:
        self.config = config
        self._groups = groups
        self._disconnect = disconnect
        self._scratch_dir = config.scratch_dir
        self.tests: dict[str, FailoverTest] = {}

    # --- BackendCatalog part (the agent's catalog asks us after volumes and exports) ------

    def backend(self, name: str) -> ExportBackend | None:
        for test in self.tests.values():
            if name in test.images:
                return test.images[name][1]
        return None

    def names(self) -> list[str]:
        return [name for test in self.tests.values() for name in test.images]

    def running_on(self, group: RecoveryGroup) -> bool:
        return any(part.group is group for test in self.tests.values() for part in test.parts)

    # --- operations -----------------------------------------------------------------------

    def clear_leftovers(self) -> None:
        """Delete scratch files of tests that an earlier agent process was running."""
        shutil.rmtree(self._scratch_dir, ignore_errors=True)

    def start(self, operation_id: str, group_id: str, checkpoint: str,
              scratch_max_bytes: int | None,
              members: dict[str, str] | None = None) -> dict[str, Any]:
        """A test of group ``group_id`` at ``checkpoint``; of a group spanning agents
        (``members``: each member journal's id -> its marker), at each member's marker."""
        if not _valid_id(operation_id):
            raise InvalidInput(f"invalid operation id {operation_id!r}")
        if operation_id in self.tests:
            raise Conflict(f"operation {operation_id} is already running here")
        wanted = members or {group_id: checkpoint}
        groups = [self._groups(member) for member in wanted]
        for group in groups:
            running = next((t for t in self.tests.values()
                            if any(p.group is group for p in t.parts)), None)
            if running is not None:
                raise Conflict(f"group {group.spec.name} already has a failover test here "
                               f"(operation {running.operation_id})")
        parts = [TestPart(group, group.resolve_checkpoint(marker))
                 for group, marker in zip(groups, wanted.values(), strict=True)]
        test = FailoverTest(operation_id, group_id, parts, time.time_ns())
        directory = self._scratch_dir / operation_id
        directory.mkdir(parents=True, exist_ok=True)
        try:
            for group, info in ((p.group, p.checkpoint) for p in parts):
                for volume in group.volumes_in(info.seq):
                    name = f"{group.spec.name}.{volume.name}.cp{info.seq}.{operation_id}"
                    limit = scratch_max_bytes or default_scratch_limit_bytes(volume.size_bytes)
                    view = group.journal.view(volume.index, info.seq)
                    try:
                        image = ScratchImage(name, view, directory / f"{volume.name}.scratch",
                                             limit)
                    except BaseException:
                        view.close()
                        raise
                    test.images[name] = (volume.name, image)
        except BaseException:
            self._close(test)
            raise
        self.tests[operation_id] = test
        return self.describe(test)

    def get(self, operation_id: str) -> FailoverTest:
        test = self.tests.get(operation_id)
        if test is None:
            raise NotFound(f"no failover test {operation_id} runs at this agent")
        return test

    def stop(self, operation_id: str) -> dict[str, Any]:
        test = self.tests.pop(operation_id, None)
        if test is None:
            raise NotFound(f"no failover test {operation_id} runs at this agent")
        description = self.describe(test)
        for name in test.images:
            self._disconnect(name)
        self._close(test)
        return description

    def close_all(self) -> None:
        """Agent shutdown: end every test (their images cannot outlive the process)."""
        for operation_id in list(self.tests):
            self.stop(operation_id)

    def _close(self, test: FailoverTest) -> None:
        for _, image in test.images.values():
            image.close()
        shutil.rmtree(self._scratch_dir / test.operation_id, ignore_errors=True)

    # --- descriptions -------------------------------------------------------------------

    def list_all(self) -> list[dict[str, Any]]:
        return [self.describe(test) for test in self.tests.values()]

    def describe(self, test: FailoverTest) -> dict[str, Any]:
        socket = self.config.nbd_socket
        images = []
        for name, (volume, image) in test.images.items():
            entry = {"volume": volume, "name": name,
                     "uri": f"nbd+unix:///{name}?socket={socket}", **image.status()}
            tcp_uri = self.config.nbd_tcp_uri(name)
            if tcp_uri is not None:
                entry["nbd_tcp_uri"] = tcp_uri
            images.append(entry)
        checkpoint = test.checkpoint
        return {
            "operation_id": test.operation_id,
            "group_id": test.group_id,
            "group": test.name,
            "checkpoint": {"id": checkpoint.seq, "time_ns": checkpoint.time_ns,
                           "name": checkpoint.name},
            "created_ns": test.created_ns,
            "images": images,
            "vms": sorted({c.name for c in test.vm_configs()}),
            "scratch_alert": any(image["scratch_alert"] for image in images),
        }


def _valid_id(operation_id: str) -> bool:
    """Operation ids name a directory: the volume-name rule keeps them safe for that."""
    return re.fullmatch(NAME_PATTERN, operation_id) is not None
