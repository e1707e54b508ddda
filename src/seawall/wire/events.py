"""Events of the replication wire protocol and their frame encodings.

An event is a frozen dataclass; ``encode_event`` turns one into the bytes of exactly one
frame and ``decode_event`` turns one checked frame back into an event. The connection state
machine (``seawall.wire.protocol``) decides which event may go where; this module only
knows shapes.

Rules and invariants:
- Every field is validated on both paths: ``check_event`` before encoding (a bad value is
  our bug, reported by the caller as a local error) and ``decode_event`` after decoding (a
  bad value is the peer's fault: ``CorruptData`` here, a protocol violation above).
- Sequence numbers are unsigned 64-bit; volume indexes are unsigned 16-bit, as in the
  record header.
- Delta sync (``HashRequest`` / ``Hashes``): a range is non-empty, at most
  ``MAX_HASH_REQUEST_BYTES``, and ends within 2**64; blocks are a power of two in
  [``MIN_HASH_BLOCK_BYTES``, ``MAX_HASH_BLOCK_BYTES``]; ``Hashes`` carries exactly one
  ``DIGEST_BYTES`` digest per block, the last block of the range possibly short.
- A ``RecordsFrame`` keeps the exact frame bytes: the receiver appends them verbatim to its
  journal, so what it acknowledges is precisely what the sender built.
- Control frames carry no compression (``Codec.NONE``).
- ``NEED_DATA`` and ``LocalProtocolError`` are every sans-IO core's (``seawall.sansio``),
  re-exported here.

Pure code: no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from seawall.errors import CorruptData, SeawallError
from seawall.sansio import NEED_DATA, LocalProtocolError, NeedData
from seawall.wire import frames
from seawall.wire.frames import (
    DIGEST_BYTES,
    Codec,
    Compressor,
    FrameHeader,
    FrameKind,
    RecordsDirectory,
)
from seawall.wire.records import Record

__all__ = [
    "MAX_HASH_BLOCK_BYTES",
    "MAX_HASH_REQUEST_BYTES",
    "MAX_SEQ",
    "MAX_VOLUME_INDEX",
    "MIN_HASH_BLOCK_BYTES",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "Ack",
    "ConnectionClosed",
    "Error",
    "Event",
    "FrameEvent",
    "HashRequest",
    "Hashes",
    "Hello",
    "LocalProtocolError",
    "NeedData",
    "RecordsFrame",
    "VolumeSpec",
    "Welcome",
    "check_event",
    "decode_event",
    "encode_event",
]

PROTOCOL_VERSION = 1
"""The only version of the session protocol (Hello field) this code speaks."""

MAX_SEQ = 2**64 - 1
MAX_VOLUME_INDEX = 2**16 - 1

MAX_HASH_REQUEST_BYTES = 64 * 1024 * 1024
"""Largest range one HashRequest may cover (its digests stay far below a frame's limit)."""
MIN_HASH_BLOCK_BYTES = 4096
MAX_HASH_BLOCK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """One member volume of the group, as the sender announces it in HELLO.

    ``index`` names the volume in every record (``Record.volume``) for as long as it is in
    the group, and is never given to another volume of the group, so a removed volume's
    records already sent stay its own. A change of members is announced by the next
    session's HELLO (the sender resets its link after a change that adds a volume); the
    records themselves carry no membership, and a new volume's first records come inside
    a sync window (SYNC_BEGIN..SYNC_END)."""

    index: int
    name: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Hello:
    """Sender -> receiver, first frame of a session."""

    group_id: str
    source_site: str
    volumes: tuple[VolumeSpec, ...]
    protocol_version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Welcome:
    """Receiver -> sender: the highest seq durable in the journal (0 = none)."""

    durable_seq: int


@dataclass(frozen=True, slots=True)
class RecordsFrame:
    """A RECORDS frame: its exact bytes, its parsed directory and its payload codec."""

    frame: bytes
    directory: RecordsDirectory
    codec: Codec

    @property
    def first_seq(self) -> int:
        return self.directory.headers[0].seq

    @property
    def last_seq(self) -> int:
        return self.directory.headers[-1].seq

    @classmethod
    def build(cls, records: Sequence[Record], compressor: Compressor) -> RecordsFrame:
        """Encode ``records`` (non-empty, consecutive seq) into one frame."""
        if not records:
            raise LocalProtocolError("a RECORDS frame needs at least one record")
        for previous, record in itertools.pairwise(records):
            if record.seq != previous.seq + 1:
                raise LocalProtocolError(
                    f"records not consecutive: {previous.seq} then {record.seq}"
                )
        frame, directory, codec = frames.build_records(records, compressor)
        return cls(frame, directory, codec)


@dataclass(frozen=True, slots=True)
class Ack:
    """Receiver -> sender: every seq up to ``durable_seq`` is durable in the journal."""

    durable_seq: int


@dataclass(frozen=True, slots=True)
class HashRequest:
    """Sender -> receiver (delta sync): the digests of ``[offset, offset + length)`` of
    ``volume`` in the recovery site's image, one per block of ``block_bytes``."""

    volume: int
    offset: int
    length: int
    block_bytes: int

    @property
    def block_count(self) -> int:
        return -(-self.length // self.block_bytes)


@dataclass(frozen=True, slots=True)
class Hashes:
    """Receiver -> sender: the answer to the HashRequest for the same range; ``digests``
    describe the image at durable seq ``at_seq``, ``DIGEST_BYTES`` per block."""

    volume: int
    offset: int
    length: int
    block_bytes: int
    at_seq: int
    digests: bytes

    @property
    def request(self) -> HashRequest:
        """The request these digests answer."""
        return HashRequest(self.volume, self.offset, self.length, self.block_bytes)


@dataclass(frozen=True, slots=True)
class Error:
    """Either side: why the session ends. The connection is closed after it."""

    code: str
    message: str

    @classmethod
    def from_exception(cls, exc: SeawallError) -> Error:
        return cls(exc.code, exc.message)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side of the connection at a frame boundary."""


Event = Hello | Welcome | RecordsFrame | Ack | HashRequest | Hashes | Error | ConnectionClosed
FrameEvent = Hello | Welcome | RecordsFrame | Ack | HashRequest | Hashes | Error
"""The events that travel as a frame (``ConnectionClosed`` is the absence of frames)."""


# --- validation ----------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    # bool is an int subclass; JSON true/false must not pass for a number.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_seq(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise ValueError(f"{name} must be an integer in [0, 2**64), not {value!r}")


def _check_str(name: str, value: object, *, allow_empty: bool = True) -> None:
    if not isinstance(value, str) or (not allow_empty and not value):
        raise ValueError(f"{name} must be a {'' if allow_empty else 'non-empty '}string")


def _check_hash_range(event: HashRequest | Hashes) -> None:
    if not _is_int(event.volume) or not 0 <= event.volume <= MAX_VOLUME_INDEX:
        raise ValueError(f"volume must be in [0, 65535], not {event.volume!r}")
    _check_seq("offset", event.offset)
    if not _is_int(event.length) or not 0 < event.length <= MAX_HASH_REQUEST_BYTES:
        raise ValueError(
            f"length must be in [1, {MAX_HASH_REQUEST_BYTES}] bytes, not {event.length!r}"
        )
    if event.offset + event.length > MAX_SEQ + 1:
        raise ValueError(f"range [{event.offset}, +{event.length}) ends past 2**64")
    block_bytes = event.block_bytes
    if (
        not _is_int(block_bytes)
        or not MIN_HASH_BLOCK_BYTES <= block_bytes <= MAX_HASH_BLOCK_BYTES
        or block_bytes & (block_bytes - 1)
    ):
        raise ValueError(
            f"block_bytes must be a power of two in [{MIN_HASH_BLOCK_BYTES}, "
            f"{MAX_HASH_BLOCK_BYTES}], not {block_bytes!r}"
        )


def check_event(event: FrameEvent) -> None:
    """Raise ``ValueError`` if a field of ``event`` is out of its range or of the wrong type."""
    if isinstance(event, Hello):
        _check_str("group_id", event.group_id, allow_empty=False)
        _check_str("source_site", event.source_site)
        if not _is_int(event.protocol_version):
            raise ValueError("protocol_version must be an integer")
        if not isinstance(event.volumes, tuple):
            raise ValueError("volumes must be a tuple of VolumeSpec")
        seen: set[int] = set()
        for volume in event.volumes:
            if not isinstance(volume, VolumeSpec):
                raise ValueError("volumes must be a tuple of VolumeSpec")
            if not _is_int(volume.index) or not 0 <= volume.index <= MAX_VOLUME_INDEX:
                raise ValueError(f"volume index must be in [0, 65535], not {volume.index!r}")
            if volume.index in seen:
                raise ValueError(f"volume index {volume.index} announced twice")
            seen.add(volume.index)
            _check_str("volume name", volume.name)
            if not _is_int(volume.size_bytes) or volume.size_bytes < 0:
                raise ValueError(f"volume size_bytes must be >= 0, not {volume.size_bytes!r}")
    elif isinstance(event, Welcome | Ack):
        _check_seq("durable_seq", event.durable_seq)
    elif isinstance(event, HashRequest):
        _check_hash_range(event)
    elif isinstance(event, Hashes):
        _check_hash_range(event)
        _check_seq("at_seq", event.at_seq)
        expected_bytes = event.request.block_count * DIGEST_BYTES
        if not isinstance(event.digests, bytes) or len(event.digests) != expected_bytes:
            raise ValueError(
                f"digests must be {expected_bytes} bytes for {event.request.block_count} "
                "blocks"
            )
    elif isinstance(event, Error):
        _check_str("code", event.code, allow_empty=False)
        _check_str("message", event.message)
    elif not isinstance(event, RecordsFrame):
        raise ValueError(f"{type(event).__name__} is not sent as a frame")


# --- encoding ------------------------------------------------------------------------------


def encode_event(event: FrameEvent) -> bytes:
    """The bytes of the one frame carrying ``event`` (checked with ``check_event`` first)."""
    if isinstance(event, RecordsFrame):
        return event.frame
    if isinstance(event, Hello):
        volumes = [
            {"index": v.index, "name": v.name, "size_bytes": v.size_bytes} for v in event.volumes
        ]
        return frames.encode_json(
            FrameKind.HELLO,
            {
                "group_id": event.group_id,
                "source_site": event.source_site,
                "volumes": volumes,
                "protocol_version": event.protocol_version,
            },
        )
    if isinstance(event, Welcome):
        return frames.encode_json(FrameKind.WELCOME, {"durable_seq": event.durable_seq})
    if isinstance(event, Ack):
        return frames.encode_ack(event.durable_seq)
    if isinstance(event, HashRequest):
        return frames.encode_hash_request(
            event.volume, event.offset, event.length, event.block_bytes
        )
    if isinstance(event, Hashes):
        return frames.encode_hashes(
            event.volume, event.offset, event.length, event.block_bytes, event.at_seq,
            event.digests,
        )
    return frames.encode_json(FrameKind.ERROR, {"code": event.code, "message": event.message})


def _fields(body: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    message = frames.decode_json(body)
    if set(message) != set(names):
        raise CorruptData(f"control frame fields {sorted(message)} instead of {sorted(names)}")
    return message


def decode_event(header: FrameHeader, frame: bytes) -> FrameEvent:
    """The event in ``frame`` (whole frame; header and body checksums already checked)."""
    body = memoryview(frame)[frames.FRAME_HEADER.size :]
    if header.kind == FrameKind.RECORDS:
        return RecordsFrame(frame, frames.read_directory(body), header.codec)
    if header.codec != Codec.NONE:
        raise CorruptData(f"{header.kind.name} frame with codec {header.codec.name}")
    event: FrameEvent
    if header.kind == FrameKind.ACK:
        event = Ack(frames.decode_ack(body))
    elif header.kind == FrameKind.WELCOME:
        event = Welcome(**_fields(bytes(body), ("durable_seq",)))
    elif header.kind == FrameKind.ERROR:
        event = Error(**_fields(bytes(body), ("code", "message")))
    elif header.kind == FrameKind.HASH_REQUEST:
        event = HashRequest(*frames.decode_hash_request(body))
    elif header.kind == FrameKind.HASHES:
        event = Hashes(*frames.decode_hashes(body))
    else:
        fields = _fields(bytes(body), ("group_id", "source_site", "volumes", "protocol_version"))
        volumes = fields["volumes"]
        if not isinstance(volumes, list) or not all(isinstance(v, dict) for v in volumes):
            raise CorruptData("HELLO volumes must be a list of objects")
        specs = []
        for volume in volumes:
            if set(volume) != {"index", "name", "size_bytes"}:
                raise CorruptData(f"HELLO volume fields {sorted(volume)}")
            specs.append(VolumeSpec(volume["index"], volume["name"], volume["size_bytes"]))
        fields["volumes"] = tuple(specs)
        event = Hello(**fields)
    try:
        check_event(event)
    except ValueError as exc:
        raise CorruptData(f"bad {header.kind.name} frame: {exc}") from None
    return event
