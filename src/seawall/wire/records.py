"""Stream records: the unit of a protection group's ordered stream.

Rules and invariants:
- Every record carries the group-wide sequence number ``seq``; a group's stream is the
  records in ``seq`` order with no gap. Any prefix of it is crash-consistent.
- ``WRITE`` carries ``length`` bytes of data for ``[offset, offset + length)`` of one volume.
- ``ZERO`` says that range now reads as zeros (NBD WRITE_ZEROES and TRIM both map to it).
- ``CHECKPOINT`` is a marker; its id is its ``seq`` and its payload its UTF-8 name. Its
  ``offset`` is its consistency (``CONSISTENCY``): 0 crash-consistent, 1 application-
  consistent (the guests' file systems were frozen around it: ``--quiesce``); any other
  value reads as crash-consistent (``consistency_name``), the claim that is always true.
- ``SYNC_BEGIN`` / ``SYNC_END`` bracket a resynchronisation (initial, bitmap or delta sync):
  a point between them is not consistent, so no checkpoint inside the window is offered.
- ``SEAL`` closes a *coordinated* checkpoint of a group spanning several agents
  (``seawall.agent.protect.coordination``): ``offset`` is the seq of this stream's CHECKPOINT
  marker, ``length`` the group-wide checkpoint id (the lead member's marker seq); no
  payload. A member writes it only if it held its acknowledgements from the marker until
  every member had its marker in, so a marker is offered for the group only once sealed.
- Seqs are consecutive, with one exception (``follows``): a frame that opens with
  SYNC_BEGIN may jump forward. A restarted protected agent numbers on above every seq it
  ever issued, so no checkpoint id is ever reused; the jump is harmless because nothing
  inside a sync window is offered.
- ``VM_CONFIG`` carries the definition of one VM whose disks the group holds (libvirt domain
  XML, or the QMP adapter's JSON view), captured when protection starts and whenever it
  changes: its payload is ``encode_vm_config`` (UTF-8 JSON: uuid, name, format,
  definition, and which group volume holds each disk), ``length`` its length,
  ``volume`` and ``offset`` 0. It goes through the stream like any record, so the
  configuration of a VM at checkpoint C is the newest VM_CONFIG of that VM at or before
  C (``seawall.journal.vm_configs``). Never secrets.
- ``payload_hash`` is xxh3-64 of the uncompressed payload, computed where the record was
  captured and checked wherever it is decompressed: an end-to-end check across codecs.

This module is pure: no I/O. The header layout is fixed by ``RECORD_HEADER``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import NamedTuple

import xxhash

from seawall.errors import CorruptData


class RecordKind(enum.IntEnum):
    WRITE = 1
    ZERO = 2
    CHECKPOINT = 3
    SYNC_BEGIN = 4
    SYNC_END = 5
    SEAL = 6
    VM_CONFIG = 7


CONSISTENCY = ("crash", "application")
"""A CHECKPOINT record's ``offset`` indexes this."""

# seq, time_ns, offset, length, payload_length, volume, kind, flags, payload_hash
RECORD_HEADER_FORMAT = ">QQQQIHBBQ"
RECORD_HEADER_SIZE = 48

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Largest payload one record may carry; longer writes are split by the capturer."""


def payload_hash(payload: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(payload)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """Everything about a record but its payload (what an index keeps)."""

    seq: int
    time_ns: int
    kind: RecordKind
    volume: int
    offset: int
    length: int
    payload_length: int
    payload_hash: int


class Record(NamedTuple):
    """A record with its payload. A NamedTuple, not a dataclass: one is made per captured
    write on the hot path, and a tuple is built three times faster."""

    seq: int
    time_ns: int
    kind: RecordKind
    volume: int = 0
    offset: int = 0
    length: int = 0
    payload: bytes = b""

    def header(self) -> RecordHeader:
        return RecordHeader(
            seq=self.seq,
            time_ns=self.time_ns,
            kind=self.kind,
            volume=self.volume,
            offset=self.offset,
            length=self.length,
            payload_length=len(self.payload),
            payload_hash=payload_hash(self.payload),
        )


def write_record(seq: int, time_ns: int, volume: int, offset: int, data: bytes) -> Record:
    return Record(seq, time_ns, RecordKind.WRITE, volume, offset, len(data), data)


def checkpoint_record(seq: int, time_ns: int, name: str, consistency: str = "crash") -> Record:
    encoded = name.encode()
    return Record(seq, time_ns, RecordKind.CHECKPOINT, 0, CONSISTENCY.index(consistency),
                  len(encoded), encoded)


def seal_record(seq: int, time_ns: int, marker_seq: int, group_checkpoint: int) -> Record:
    return Record(seq, time_ns, RecordKind.SEAL, 0, marker_seq, group_checkpoint, b"")


def consistency_name(code: int) -> str:
    """A CHECKPOINT record's ``offset`` as its consistency."""
    return CONSISTENCY[code] if 0 <= code < len(CONSISTENCY) else "crash"


@dataclass(frozen=True)
class VmConfig:
    """One VM's definition as a VM_CONFIG record carries it (``seq``: that record's)."""

    uuid: str
    name: str
    format: str  # "libvirt-xml" or "qmp-json"
    definition: str
    volumes: tuple[tuple[str, str], ...] = ()  # (disk target, the group's volume), sorted
    seq: int = 0
    time_ns: int = 0


def encode_vm_config(config: VmConfig) -> bytes:
    return json.dumps({"uuid": config.uuid, "name": config.name, "format": config.format,
                       "definition": config.definition, "volumes": dict(config.volumes)},
                      sort_keys=True).encode()


def decode_vm_config(payload: bytes | memoryview, seq: int, time_ns: int) -> VmConfig:
    try:
        value = json.loads(bytes(payload))
        volumes = tuple(sorted((str(disk), str(volume))
                               for disk, volume in dict(value["volumes"]).items()))
        return VmConfig(str(value["uuid"]), str(value["name"]), str(value["format"]),
                        str(value["definition"]), volumes, seq, time_ns)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptData(f"record {seq}: not a VM configuration ({exc})") from None


def vm_config_record(seq: int, time_ns: int, config: VmConfig) -> Record:
    encoded = encode_vm_config(config)
    return Record(seq, time_ns, RecordKind.VM_CONFIG, 0, 0, len(encoded), encoded)


def checkpoint_name(record: Record) -> str:
    return record.payload.decode(errors="replace")


def follows(last_seq: int, first: RecordHeader) -> bool:
    """Whether a frame whose first record is ``first`` may come after seq ``last_seq``."""
    if first.seq == last_seq + 1:
        return True
    return first.kind == RecordKind.SYNC_BEGIN and first.seq > last_seq + 1


def validate_header(header: RecordHeader) -> None:
    """Reject headers whose fields contradict their kind (a corrupt or hostile frame)."""
    kind = header.kind
    if header.payload_length > MAX_PAYLOAD_BYTES:
        raise CorruptData(f"record {header.seq}: payload of {header.payload_length} bytes")
    if kind == RecordKind.WRITE and header.payload_length != header.length:
        raise CorruptData(f"record {header.seq}: write payload does not match its length")
    if kind == RecordKind.CHECKPOINT and header.payload_length != header.length:
        raise CorruptData(f"record {header.seq}: checkpoint name does not match its length")
    if kind == RecordKind.VM_CONFIG and (
        header.payload_length != header.length or header.payload_length == 0
        or header.volume != 0 or header.offset != 0
    ):
        raise CorruptData(f"record {header.seq}: a VM configuration must carry its payload "
                          "and no volume range")
    if kind in (RecordKind.ZERO, RecordKind.SYNC_BEGIN, RecordKind.SYNC_END) and (
        header.payload_length != 0
    ):
        raise CorruptData(f"record {header.seq}: {kind.name} record with a payload")
    if kind == RecordKind.SEAL and (
        header.payload_length != 0 or not 0 < header.offset < header.seq or header.length == 0
    ):
        raise CorruptData(f"record {header.seq}: a seal must name an earlier marker and a "
                          "group checkpoint, with no payload")
