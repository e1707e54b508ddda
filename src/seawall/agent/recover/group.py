"""A protection group on its recovery side: the journal, the replicas, checkpoint lookups.

Invariants:
- The journal is the truth. Everything this class reports (positions, checkpoints, RPO,
  retention) is read from the journal's index, rebuilt from segments on open.
- Retention runs from ``start`` to ``stop`` (``JournalAging``, under the group's
  ``RetentionPolicy``); the policy also sizes the journal's segments (at open: a new
  journal limit sizes the segments from the next open on).
- ``set_retention`` swaps the policy in place: the next retention step follows it.
- The journal holds the group's members and its retired volumes (``RecoverySpec.retired``):
  a retired volume reads back at the checkpoints that include it (seq at or below its
  ``removed_after_seq``) until they age out; later checkpoints do not list it.
- A VM's configuration at a checkpoint is the journal's (``seawall.journal.vm_configs``):
  the newest captured at or before it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from seawall.agent.recover.aging import JournalAging
from seawall.agent.recover.members import includes
from seawall.contract.agent import GroupVolume, RecoverySpec, RetiredVolume
from seawall.errors import Conflict, InvalidInput, NotFound, NotReady
from seawall.hypervisor.definitions import describe
from seawall.journal.journal import CheckpointInfo, Journal
from seawall.journal.policy import RetentionPolicy
from seawall.wire.records import VmConfig


def retention_policy(spec: RecoverySpec) -> RetentionPolicy:
    return RetentionPolicy(spec.history_s, spec.journal_max_bytes, spec.journal_warning_ratio)


def replica_path(spec: RecoverySpec, directory: Path, volume: str) -> Path:
    return spec.replica_paths.get(volume) or directory / "replicas" / f"{volume}.raw"


class RecoveryGroup:
    def __init__(self, spec: RecoverySpec, directory: Path) -> None:
        self.spec = spec
        self.directory = directory
        policy = retention_policy(spec)
        held = [*spec.volumes, *spec.retired]
        self.journal = Journal.open(
            directory / "journal",
            {v.index: v.size_bytes for v in held},
            {v.index: replica_path(spec, directory, v.name) for v in held},
            segment_limit_bytes=policy.segment_limit_bytes,
        )
        self.aging = JournalAging(self.journal, policy, spec.name)
        self.lock = asyncio.Lock()  # one replication session at a time
        self.connected = False
        self.received_bytes = 0

    def volume_index(self, name: str, checkpoint_seq: int | None = None) -> int:
        """The journal's index of volume ``name``: a member, or a retired one; at
        ``checkpoint_seq``, only if that checkpoint includes it (``members.includes``)."""
        for volume in [*self.spec.volumes, *self.spec.retired]:
            if volume.name != name:
                continue
            if checkpoint_seq is None or includes(self.spec, volume, checkpoint_seq):
                return volume.index
            if isinstance(volume, RetiredVolume):
                raise NotFound(f"volume {name!r} was removed from group {self.spec.name} "
                               f"before checkpoint {checkpoint_seq}")
            raise NotFound(f"volume {name!r} was added to group {self.spec.name} after "
                           f"checkpoint {checkpoint_seq}")
        raise NotFound(f"group {self.spec.name} has no volume {name!r}")

    def volumes_in(self, checkpoint_seq: int) -> list[GroupVolume]:
        """The volumes checkpoint ``checkpoint_seq`` includes (members and retired ones)."""
        return [v for v in [*self.spec.volumes, *self.spec.retired]
                if includes(self.spec, v, checkpoint_seq)]

    def volumes_at(self, checkpoint_seq: int) -> list[str]:
        """The names of the volumes checkpoint ``checkpoint_seq`` includes."""
        return [v.name for v in self.volumes_in(checkpoint_seq)]

    def resolve_checkpoint(self, checkpoint: str) -> CheckpointInfo:
        if checkpoint == "latest":
            return self.journal.latest_checkpoint()
        try:
            seq = int(checkpoint)
        except ValueError:
            raise InvalidInput(f"checkpoint must be an id or 'latest': {checkpoint!r}") from None
        return self.journal.checkpoint(seq)

    def checkpoint_list(self, newest: int | None = None) -> list[dict[str, Any]]:
        return [
            {"id": c.seq, "time_ns": c.time_ns, "name": c.name, "replicated": True,
             "consistent": c.consistent, "sealed_as": c.sealed_as,
             "consistency": c.consistency,
             "volumes": self.volumes_at(c.seq)}
            for c in self.journal.checkpoints(newest)
        ]

    def vm_configs(self, checkpoint: str) -> list[dict[str, Any]]:
        """Every VM's configuration at ``checkpoint`` (an id or latest), by name."""
        info = self.resolve_checkpoint(checkpoint)
        configs = sorted(self.journal.vm_configs_at(info.seq).values(), key=lambda c: c.name)
        return [self._config_view(config, info) for config in configs]

    def vm_config(self, vm: str, checkpoint: str) -> dict[str, Any]:
        """VM ``vm`` (name or uuid) as configured at ``checkpoint`` (an id or latest)."""
        info = self.resolve_checkpoint(checkpoint)
        configs = self.journal.vm_configs_at(info.seq)
        found = [c for c in configs.values() if vm in (c.uuid, c.name)]
        if not found:
            known = ", ".join(sorted(c.name for c in configs.values())) or "none"
            raise NotFound(f"group {self.spec.name} has no configuration of VM {vm!r} at "
                           f"checkpoint {info.seq} (VMs there: {known})")
        if len(found) > 1:
            raise Conflict(f"{len(found)} VMs of group {self.spec.name} are named {vm!r}: "
                           "use a uuid")
        return self._config_view(found[0], info)

    @staticmethod
    def _config_view(config: VmConfig, info: CheckpointInfo) -> dict[str, Any]:
        return {"name": config.name, "uuid": config.uuid, "checkpoint": info.seq,
                "checkpoint_name": info.name, "config_seq": config.seq,
                "config_time_ns": config.time_ns, "format": config.format,
                **describe(config), "definition": config.definition}

    def status(self) -> dict[str, Any]:
        try:
            latest: CheckpointInfo | None = self.journal.latest_checkpoint()
        except NotReady:
            latest = None
        now_ns = time.time_ns()
        return {
            "group_id": self.spec.group_id,
            "name": self.spec.name,
            "role": "recovery",
            "connected": self.connected,
            "durable_seq": self.journal.durable_seq,
            "received_bytes": self.received_bytes,
            "newest_checkpoint_ns": latest.time_ns if latest else None,
            "rpo_s": (now_ns - latest.time_ns) / 1e9 if latest else None,
            **self.aging.status(now_ns),
            "retired": [v.name for v in self.spec.retired],
        }

    def set_retention(self, history_s: float, journal_max_bytes: int | None,
                      journal_warning_ratio: float) -> None:
        """Follow this retention from the next step on. The policy checks the values before
        anything changes, and is replaced whole: the aging thread sees the old one or the
        new one, never a mix. The spec is changed in place (it is the agent state's)."""
        policy = RetentionPolicy(history_s, journal_max_bytes, journal_warning_ratio)
        self.spec.history_s, self.spec.journal_max_bytes = history_s, journal_max_bytes
        self.spec.journal_warning_ratio = journal_warning_ratio
        self.aging.policy = policy

    def start(self) -> None:
        """Start retention (needs a running event loop)."""
        self.aging.start()

    async def stop(self) -> None:
        """Stop retention, waiting for an apply under way."""
        await self.aging.stop()

    def close(self) -> None:
        self.journal.close()

