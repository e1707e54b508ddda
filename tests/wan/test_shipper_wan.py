"""The shipper's WAN wiring: measured windows pick its compressor; status shows the facts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from seawall.agent.protect.shipper import COMPRESSION_WINDOW_S, Shipper
from seawall.agent.protect.stream import GroupStream
from seawall.contract.agent import GroupVolume, ProtectionSpec
from seawall.wan.site_throttle import SiteThrottle
from seawall.wire.frames import Codec


def shipper(codec: str = "zstd") -> Shipper:
    spec = ProtectionSpec(group_id="g1", name="app", target_host="127.0.0.1", target_port=1,
                          volumes=[GroupVolume(index=0, name="disk0", size_bytes=1 << 20)],
                          codec=codec, priority="low")
    group: Any = SimpleNamespace(spec=spec, stream=GroupStream())
    return Shipper(group, "site", SiteThrottle(4 << 20), tls=None)  # never connects here


def saturated_window(subject: Shipper) -> None:
    subject._window_start_s -= COMPRESSION_WINDOW_S
    subject._compress_busy_s = COMPRESSION_WINDOW_S  # the compress thread never rested
    subject._adapt_compression()


def test_a_saturated_compress_thread_lowers_zstd_then_turns_it_off() -> None:
    subject = shipper()
    assert subject.status()["zstd_level"] == 1
    saturated_window(subject)
    assert (subject._compressor.codec, subject._compressor.level) == (Codec.ZSTD, -1)
    saturated_window(subject)
    assert subject._compressor.codec == Codec.NONE
    status = subject.status()
    assert (status["codec"], status["codec_in_use"], status["zstd_level"]) == (
        "zstd", "none", None)
    assert status["compress_busy_fraction"] >= 0.9


def test_status_shows_throttle_priority_and_a_fixed_codec() -> None:
    subject = shipper("lz4")
    saturated_window(subject)
    assert subject._compressor.codec == Codec.LZ4
    status = subject.status()
    assert status["throttle_bytes_per_s"] == 4 << 20
    assert (status["priority"], status["codec_in_use"], status["sent_bytes"]) == ("low", "lz4", 0)
