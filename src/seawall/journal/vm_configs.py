"""VM configurations at the recovery site: which definition of each VM a checkpoint uses.

The protected agent puts a VM_CONFIG record (``seawall.wire.records``) into the group
stream when protection starts, whenever a sync window opens and whenever a VM's
definition changes; it is journaled and indexed like every record.

Rules and invariants:
- The configuration of VM V at checkpoint C is the newest VM_CONFIG of V with seq <= C
  (``configs_in_force``, pure). A VM with none at or before C has no configuration there.
- Retention: before an apply drops frames through seq B, the configurations in force at
  B are written atomically to ``BASE_FILE`` beside the journal's state (the *base*
  configurations), then the records that carried them may go. So every checkpoint still
  offered (all > B) finds its configuration: a record after B, or the base. The base is
  written before the apply's intent, so a crash leaves either the old base (and the
  records) or the new base (and maybe the records still: they agree with it).
- Like the catalog, nothing here but the base file is persisted: the configurations are
  read from the journal's records when asked (decoded ones are cached by seq).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from seawall.atomic import atomic_write_json
from seawall.errors import CorruptData
from seawall.journal.catalog import Catalog, VmConfigEntry
from seawall.wire.records import VmConfig, decode_vm_config, payload_hash

BASE_FILE = "vm-configs.json"

BlobReader = Callable[[Catalog, VmConfigEntry], memoryview]
"""Reads the payload of a VM_CONFIG entry of a catalog (CorruptData once it is applied)."""


def configs_in_force(base: Iterable[VmConfig], records: Iterable[VmConfig],
                     seq: int) -> dict[str, VmConfig]:
    """Each VM's newest configuration at or before ``seq``, by uuid: ``records`` (in seq
    order) over ``base`` (the configurations in force where the journal starts)."""
    current = {config.uuid: config for config in base}
    for config in records:
        if config.seq > seq:
            break
        current[config.uuid] = config
    return current


def load_base(directory: Path) -> list[VmConfig]:
    try:
        raw = (directory / BASE_FILE).read_bytes()
    except FileNotFoundError:
        return []
    try:
        return [VmConfig(**{**item, "volumes": tuple(tuple(pair) for pair in item["volumes"])})
                for item in json.loads(raw)]
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptData(f"{directory / BASE_FILE}: {exc}") from None


def _as_json(config: VmConfig) -> dict[str, object]:
    return {"uuid": config.uuid, "name": config.name, "format": config.format,
            "definition": config.definition, "volumes": [list(p) for p in config.volumes],
            "seq": config.seq, "time_ns": config.time_ns}


class JournalVmConfigs:
    """The VM configurations of one journal: its base and its VM_CONFIG records."""

    def __init__(self, directory: Path, read: BlobReader) -> None:
        self.directory = directory
        self.base = load_base(directory)
        self._read = read
        self._decoded: dict[int, VmConfig] = {}
        self._lock = threading.Lock()  # the cache is filled by the loop and the apply thread

    def at(self, catalog_now: Callable[[], Catalog], seq: int) -> dict[str, VmConfig]:
        """The configurations in force at ``seq`` (by uuid). ``catalog_now`` gives the
        journal's current catalog: an apply swapping it meanwhile makes us read again."""
        for _attempt in range(3):
            base, catalog = self.base, catalog_now()
            try:
                records = [self._decode(catalog, entry)
                           for entry in catalog.vm_configs if entry.seq <= seq]
            except CorruptData:
                if catalog is catalog_now():
                    raise
                continue  # its frames were applied meanwhile: the new base has them
            return configs_in_force(base, records, seq)
        raise CorruptData(f"journal {self.directory}: VM configurations kept moving")

    def keep_through(self, catalog: Catalog, boundary: int) -> None:
        """Before an apply through ``boundary``: make the configurations in force there the
        base, durably (see the module rules)."""
        kept = self.at(lambda: catalog, boundary)
        if kept != {config.uuid: config for config in self.base}:
            configs = sorted(kept.values(), key=lambda config: config.seq)
            atomic_write_json(self.directory / BASE_FILE, [_as_json(c) for c in configs])
            self.base = configs
        with self._lock:
            self._decoded = {s: c for s, c in self._decoded.items() if s > boundary}

    def _decode(self, catalog: Catalog, entry: VmConfigEntry) -> VmConfig:
        with self._lock:
            config = self._decoded.get(entry.seq)
        if config is None:
            raw = self._read(catalog, entry)
            if payload_hash(raw) != entry.payload_hash:
                raise CorruptData(f"VM configuration {entry.seq}: checksum mismatch")
            config = decode_vm_config(raw, entry.seq, entry.time_ns)
            with self._lock:
                self._decoded[entry.seq] = config
        return config
