"""Hypothesis strategies and in-memory session helpers shared by the wire tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from seawall.wire.frames import Codec, Compressor
from seawall.wire.protocol import (
    NEED_DATA,
    Event,
    Hello,
    RecordsFrame,
    Role,
    VolumeSpec,
    Welcome,
    WireConnection,
)
from seawall.wire.records import Record, RecordKind, VmConfig, vm_config_record

MAX_SEQ = 2**64 - 1

wire_settings = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""For tests drawing whole frames: the first examples pay for imports and warm-up."""

payloads = st.one_of(
    st.binary(max_size=2048),
    # Repetitive payloads, so that ZSTD and LZ4 really compress instead of storing as is.
    st.builds(lambda unit, count: unit * count, st.binary(min_size=1, max_size=4),
              st.integers(0, 1500)),
)


@st.composite
def record_at(draw: st.DrawFn, seq: int) -> Record:
    kind = draw(st.sampled_from([k for k in RecordKind if k != RecordKind.SEAL or seq > 1]))
    time_ns = draw(st.integers(0, 2**64 - 1))
    volume = draw(st.integers(0, 2**16 - 1))
    if kind == RecordKind.SEAL:  # it names an earlier marker and a group checkpoint
        return Record(seq, time_ns, kind, volume, draw(st.integers(1, seq - 1)),
                      draw(st.integers(1, 2**64 - 1)))
    offset = draw(st.integers(0, 2**64 - 1))
    if kind == RecordKind.WRITE:
        payload = draw(payloads)
        return Record(seq, time_ns, kind, volume, offset, len(payload), payload)
    if kind == RecordKind.CHECKPOINT:
        name = draw(st.text(max_size=40)).encode()
        return Record(seq, time_ns, kind, volume, offset, len(name), name)
    if kind == RecordKind.VM_CONFIG:  # no volume range; its payload is the definition
        return vm_config_record(seq, time_ns, VmConfig(
            draw(st.uuids()).hex, draw(st.text(max_size=20)), "libvirt-xml",
            draw(st.text(max_size=200))))
    return Record(seq, time_ns, kind, volume, offset, draw(st.integers(0, 2**64 - 1)))


@st.composite
def record_batches(draw: st.DrawFn, first_seq: int | None = None,
                   max_records: int = 8) -> list[Record]:
    """Non-empty runs of records with consecutive seq."""
    count = draw(st.integers(1, max_records))
    if first_seq is None:
        first_seq = draw(st.integers(1, MAX_SEQ - count + 1))
    return [draw(record_at(first_seq + index)) for index in range(count)]


codecs = st.sampled_from(Codec)


def feed(connection: WireConnection, data: bytes, chunk_sizes: Sequence[int] = (1,),
         eof: bool = False) -> list[Event]:
    """Deliver ``data`` in chunks of the given sizes (cycled) and collect every event."""
    events: list[Event] = []
    position = 0
    turn = 0

    def drain() -> None:
        while (event := connection.next_event()) is not NEED_DATA:
            events.append(event)
            if connection.state.name == "CLOSED":
                return

    while position < len(data):
        size = chunk_sizes[turn % len(chunk_sizes)]
        turn += 1
        connection.receive_data(data[position : position + size])
        position += size
        drain()
    if eof:
        connection.receive_data(b"")
        drain()
    return events


HELLO = Hello("group-1", "site-a", (VolumeSpec(0, "disk0", 1 << 30), VolumeSpec(1, "d1", 0)))


def streaming_pair(durable_seq: int = 0) -> tuple[WireConnection, WireConnection]:
    """A sender and a receiver that completed the handshake with ``Welcome(durable_seq)``."""
    sender = WireConnection(Role.SENDER)
    receiver = WireConnection(Role.RECEIVER)
    assert feed(receiver, sender.send(HELLO), (1 << 20,)) == [HELLO]
    welcome = Welcome(durable_seq)
    assert feed(sender, receiver.send(welcome), (1 << 20,)) == [welcome]
    return sender, receiver


def frame_of(first_seq: int, count: int = 1, payload: bytes = b"data",
             codec: Codec = Codec.NONE) -> RecordsFrame:
    records = [
        Record(seq, 7, RecordKind.WRITE, 0, seq * 4096, len(payload), payload)
        for seq in range(first_seq, first_seq + count)
    ]
    return RecordsFrame.build(records, Compressor(codec))


def concat(chunks: Iterable[bytes]) -> bytes:
    return b"".join(chunks)
