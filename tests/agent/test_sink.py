"""The capture sink's rules, fed directly (``SinkVolume``) and through the handshake."""

from __future__ import annotations

import asyncio
import errno

import pytest

from seawall.agent.protect.sink import SinkVolume
from seawall.nbd.constants import TFLAG_SEND_TRIM, TFLAG_SEND_WRITE_ZEROES
from seawall.nbd.handshake import transmission_flags
from seawall.wire.records import RecordKind

SIZE_BYTES = 1 << 20
Captured = tuple[RecordKind, int, int, bytes]


def sink_with_log() -> tuple[SinkVolume, list[Captured]]:
    sink = SinkVolume("vm1-vda", SIZE_BYTES, "uuid-1", "vda")
    log: list[Captured] = []
    sink.capture = lambda kind, offset, length, payload: log.append(
        (kind, offset, length, payload))
    return sink, log


def test_writes_and_zeroes_are_captured_in_order_and_nothing_is_kept() -> None:
    sink, log = sink_with_log()
    sink.write(0, b"a" * 4096)
    sink.write(4096, memoryview(b"b" * 512))
    sink.write_zeroes(8192, 65536)
    assert log == [(RecordKind.WRITE, 0, 4096, b"a" * 4096),
                   (RecordKind.WRITE, 4096, 512, b"b" * 512),
                   (RecordKind.ZERO, 8192, 65536, b"")]
    with pytest.raises(OSError) as refused:
        sink.read(0, 4096)  # no copy to read: the VM's own disk is the only one
    assert refused.value.errno == errno.EIO
    assert not hasattr(sink, "path")


def test_trim_is_not_advertised_and_changes_nothing() -> None:
    sink, log = sink_with_log()
    flags = transmission_flags(sink.info)
    assert not flags & TFLAG_SEND_TRIM and flags & TFLAG_SEND_WRITE_ZEROES
    sink.trim(0, SIZE_BYTES)  # a discard the source may have ignored: never a ZERO record
    assert log == []


def test_flush_returns_at_once_and_ranges_are_checked_before_capture() -> None:
    sink, log = sink_with_log()
    asyncio.run(asyncio.wait_for(sink.flush(), 0.1))
    for call, code in ((lambda: sink.write(SIZE_BYTES - 512, b"x" * 1024), errno.ENOSPC),
                       (lambda: sink.write_zeroes(SIZE_BYTES, 512), errno.ENOSPC),
                       (lambda: sink.trim(SIZE_BYTES, 512), errno.EINVAL),
                       (lambda: sink.read(SIZE_BYTES, 512), errno.EINVAL)):
        with pytest.raises(OSError) as refused:
            call()
        assert refused.value.errno == code
    assert log == []


def test_a_discarding_sink_acknowledges_writes_and_captures_none_until_switched() -> None:
    """libvirt's full copy for a comparison: acknowledged, captured nowhere, until the
    Splitter switches the sink to capture (its job is ready); then every write counts."""
    sink, log = sink_with_log()
    watch = sink.watch(0, SIZE_BYTES)  # no read runs then; even so, nothing is noted
    sink.discarding = True
    sink.write(0, b"c" * 65536)  # the copy phase: returns, so the mirror goes on
    sink.write_zeroes(65536, 65536)
    with pytest.raises(OSError) as refused:  # still checked: a bad range is not acknowledged
        sink.write(SIZE_BYTES - 512, b"x" * 1024)
    assert refused.value.errno == errno.ENOSPC
    assert log == [] and watch.written == []
    sink.discarding = False
    sink.write(4096, b"g" * 512)
    sink.write_zeroes(8192, 4096)
    assert log == [(RecordKind.WRITE, 4096, 512, b"g" * 512), (RecordKind.ZERO, 8192, 4096, b"")]
    assert watch.written == [(4096, 4608), (8192, 12288)]
