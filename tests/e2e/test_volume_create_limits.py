"""`volume create` on a file system that cannot hold the volume: a clear refusal, nothing
left behind (the name stays free), and a warning for a thin volume larger than the free space.

The site's volumes directory is a real ext2 file system with 1 KiB blocks (loop-mounted,
needs root): its largest file is about 16 GiB, so `--size 16T` meets EFBIG from the kernel.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seawall.localsites import LocalSite
from support.cli import refused, seawall
from support.sites import stop_for_sure
from support.tmpfs import mounted_ext2

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("mkfs.ext2") is None, reason="needs e2fsprogs")]

FS_BYTES = 64 << 20


def test_volume_too_large_for_its_file_system_leaves_nothing_and_says_why(
    tmp_path: Path,
) -> None:
    log = (tmp_path / "site.log").open("w")
    site = LocalSite("prod", tmp_path / "prod", log)
    with mounted_ext2(site.config.volumes_dir, tmp_path / "volumes.ext2", FS_BYTES) as volumes:
        try:
            site.start()
            before = sorted(p.name for p in volumes.iterdir())

            too_big = refused(site, "volume", "create", "big", "--size", "16T")
            assert too_big.returncode == 2, too_big.stderr  # InvalidInput, not a 500
            message = " ".join(too_big.stderr.split())
            assert "larger than the file system" in message and "Traceback" not in message
            assert sorted(p.name for p in volumes.iterdir()) == before  # no file left
            assert site.api.get("/api/v1/volumes") == []

            made = json.loads(seawall(site, "volume", "create", "big", "--size", "8M",
                                      "--json").stdout)  # the name was not taken
            assert made["name"] == "big" and made["size"] == 8 << 20
            assert "warning" not in made
            assert (volumes / "big.raw").stat().st_size == 8 << 20

            thin = seawall(site, "volume", "create", "thin", "--size", "1G")
            warning = " ".join(thin.stderr.split())
            assert "warning: volume is thin" in warning and "bytes free" in warning, warning
            assert (volumes / "thin.raw").stat().st_size == 1 << 30
            assert {v["name"] for v in site.api.get("/api/v1/volumes")} == {"big", "thin"}
        finally:
            stop_for_sure(site)
            log.close()
