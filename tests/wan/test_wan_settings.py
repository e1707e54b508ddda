"""WAN settings where users type them: site init, agent run overrides, the site file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from seawall.config import SiteConfig
from seawall.errors import InvalidInput

MIB = 1 << 20


def make_site(tmp_path: Path, **settings: object) -> SiteConfig:
    return SiteConfig.create("prod", tmp_path / "prod", "127.0.0.1:7000", "127.0.0.1:7001",
                             **settings)  # type: ignore[arg-type]


def test_throttle_and_schedule_are_kept_in_the_site_file(tmp_path: Path) -> None:
    config = make_site(tmp_path, throttle_bytes_per_s=50 * MIB,
                       throttle_schedule="08:00-18:00=10M,18:00-08:00=none")
    loaded = SiteConfig.load(config.data_dir)
    assert loaded.throttle_bytes_per_s == 50 * MIB
    assert loaded.throttle_schedule == "08:00-18:00=10M,18:00-08:00=none"


def test_a_bad_schedule_is_refused_at_init_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="'08:00-18:00=10M' and '17:00-19:00=1M' overlap"):
        make_site(tmp_path, throttle_schedule="08:00-18:00=10M,17:00-19:00=1M")
    assert not (tmp_path / "prod" / "site.json").exists()


def test_agent_run_overrides_are_validated(tmp_path: Path) -> None:
    config = make_site(tmp_path)
    assert config.throttle_bytes_per_s is None
    changed = config.with_overrides(buffer_bytes=64 * MIB, throttle_bytes_per_s=4 * MIB)
    assert (changed.buffer_bytes, changed.throttle_bytes_per_s) == (64 * MIB, 4 * MIB)
    with pytest.raises(InvalidInput, match="buffer_bytes"):
        config.with_overrides(buffer_bytes=1024)


def seawall(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seawall", *args], capture_output=True,
                          text=True, timeout=60)


def test_site_init_cli_takes_a_throttle_and_refuses_bad_ones(tmp_path: Path) -> None:
    bad = seawall("site", "init", "--name", "a", "--data", str(tmp_path / "a"),
                  "--throttle", "fast")
    assert bad.returncode == 2
    assert "invalid rate 'fast'" in bad.stdout + bad.stderr
    bad = seawall("site", "init", "--name", "a", "--data", str(tmp_path / "a"),
                  "--throttle-schedule", "8-18=10M")
    assert bad.returncode == 2
    assert "'8' is not HH:MM" in bad.stdout + bad.stderr
    good = seawall("site", "init", "--name", "a", "--data", str(tmp_path / "a"),
                   "--throttle", "50M", "--throttle-schedule", "22:00-06:00=0")
    assert good.returncode == 0, good.stderr
    config = SiteConfig.load(tmp_path / "a")
    assert config.throttle_bytes_per_s == 50 * MIB
    assert config.throttle_schedule == "22:00-06:00=0"
