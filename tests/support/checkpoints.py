"""Checkpoints as the two sites list them, and their content read back at the recovery site.

Rules:
- Content is read the way a user recovers: an NBD export of the checkpoint at the recovery
  site, read from first to last byte; the export is stopped whatever happens.
- ``disagreements`` holds the cross-site rules: ids are unique at the protected site, and
  a checkpoint it calls replicated is listed at the recovery site under the same name.
"""

from __future__ import annotations

import hashlib
from typing import Any

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient

from .workload import GROUP, VOLUME, VOLUME_BYTES

READ_CHUNK_BYTES = 4 << 20


def listed(site: LocalSite) -> dict[int, dict[str, Any]]:
    return {int(c["id"]): c for c in site.api.get(f"/api/v1/groups/{GROUP}/checkpoints")}


def export_sha256(dr: LocalSite, checkpoint: int, volume_bytes: int = VOLUME_BYTES) -> str:
    export = dr.api.post("/api/v1/exports", {"group": GROUP, "volume": VOLUME,
                                             "checkpoint": str(checkpoint)})
    try:
        digest = hashlib.sha256()
        with NbdClient(export["uri"]) as client:
            assert client.size == volume_bytes
            for offset in range(0, volume_bytes, READ_CHUNK_BYTES):
                digest.update(client.read(offset, min(READ_CHUNK_BYTES, volume_bytes - offset)))
        return digest.hexdigest()
    finally:
        dr.api.post("/api/v1/exports/stop", {"uri": export["uri"]})


def verify(dr: LocalSite, expected: dict[int, str]) -> None:
    """Every checkpoint in ``expected`` is listed, consistent, and exports its content."""
    at_dr = listed(dr)
    for checkpoint, sha256 in sorted(expected.items()):
        assert checkpoint in at_dr, f"checkpoint {checkpoint} is not at the recovery site"
        assert at_dr[checkpoint]["consistent"], f"checkpoint {checkpoint} is not consistent"
        assert export_sha256(dr, checkpoint) == sha256, f"checkpoint {checkpoint} differs"


def wait_all(dr: LocalSite, checkpoints: list[int]) -> None:
    if checkpoints:  # seq order: the newest there means all of them there
        dr.wait_checkpoint(GROUP, max(checkpoints), timeout_s=30)


def disagreements(prod: LocalSite, dr: LocalSite) -> list[str]:
    """Ids must be unique at the protected site, and what it calls replicated is at dr."""
    raw = prod.api.get(f"/api/v1/groups/{GROUP}/checkpoints")
    ids = [int(c["id"]) for c in raw]
    problems = []
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        problems.append(f"checkpoint ids repeat at the protected site: {repeated}")
    at_dr = listed(dr)
    for checkpoint in raw:
        other = at_dr.get(int(checkpoint["id"]))
        if checkpoint["replicated"] and (other is None or other["name"] != checkpoint["name"]):
            problems.append(f"prod says {checkpoint} is replicated; dr has {other}")
    return problems
