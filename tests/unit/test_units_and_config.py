"""What users type: sizes, durations, HOST:PORT, and the site configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawall.config import SiteConfig, parse_host_port
from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.units import format_bytes, parse_duration_s, parse_size_bytes


@pytest.mark.parametrize(("text", "expected"), [
    ("4096", 4096), ("256M", 256 << 20), ("10G", 10 << 30), ("1.5K", 1536), ("2GiB", 2 << 30),
    ("512m", 512 << 20),
])
def test_sizes(text: str, expected: int) -> None:
    assert parse_size_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1M", "10X", "M"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_size_bytes(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("5s", 5.0), ("500ms", 0.5), ("10m", 600.0), ("24h", 86400.0), ("7d", 604800.0), ("3", 3.0),
])
def test_durations(text: str, expected: float) -> None:
    assert parse_duration_s(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration_s(text)


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 << 20) == "3.0 MiB"


def test_host_port() -> None:
    assert parse_host_port("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_host_port("[::1]:443") == ("::1", 443)
    for bad in ("7000", "host:", "host:99999", ":80"):
        with pytest.raises(InvalidInput):
            parse_host_port(bad)


def test_site_config_round_trip_and_refusals(tmp_path: Path) -> None:
    config = SiteConfig.create("prod", tmp_path / "prod", "127.0.0.1:7000", "0.0.0.0:7001",
                               advertise_replication="10.0.0.5:7001", nbd_tcp="127.0.0.1:10809")
    assert SiteConfig.load(tmp_path / "prod") == config
    assert config.advertised_replication == ("10.0.0.5", 7001)
    assert config.agent_socket.parent.is_dir()
    with pytest.raises(Conflict):
        SiteConfig.create("again", tmp_path / "prod", "127.0.0.1:7000", "127.0.0.1:7001")
    with pytest.raises(InvalidInput):
        SiteConfig.create("bad name!", tmp_path / "x", "127.0.0.1:7000", "127.0.0.1:7001")
    with pytest.raises(NotFound):
        SiteConfig.load(tmp_path / "nothing")
