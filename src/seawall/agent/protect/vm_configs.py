"""A protected group's VM configurations, as the stream carries them to the recovery site.

Rules and invariants:
- The newest configuration of each VM (``set``, from ``VmWatch`` through
  ``ProtectedGroup.set_vm_config``) is kept and put into the stream as a VM_CONFIG record
  when it changes (unless the group is tracking) and again at the start of every sync
  window (``append_all``), so the recovery site has each VM's configuration at or before
  every checkpoint, whatever records a dropped stream lost.
"""

from __future__ import annotations

import time

from seawall.agent.protect.stream import GroupStream
from seawall.wire.records import RecordKind, VmConfig, encode_vm_config


class GroupVmConfigs:
    def __init__(self, stream: GroupStream) -> None:
        self._stream = stream
        self.newest: dict[str, VmConfig] = {}  # by VM uuid: the newest captured

    def set(self, config: VmConfig, streaming: bool) -> None:
        """Keep ``config``; into the stream now if ``streaming`` (else the next window)."""
        self.newest[config.uuid] = config
        if streaming:
            self._append(config)

    def append_all(self) -> None:
        """Every VM's newest configuration into the stream (a sync window opens)."""
        for config in self.newest.values():
            self._append(config)

    def _append(self, config: VmConfig) -> None:
        encoded = encode_vm_config(config)
        self._stream.append(RecordKind.VM_CONFIG, time.time_ns(), 0, 0, len(encoded), encoded)
