"""One protected group on two local sites, for end-to-end tests: set up, write, check.

Rules: the group is named ``GROUP`` with one volume ``disk0``; every write through
``write`` is mirrored into the caller's reference model (a bytearray as large as the
volume), so a checkpoint's expected content is the model's sha256 at the moment it is
tagged (nothing else writes to the volume).
"""

from __future__ import annotations

import hashlib
import random
import time

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import seawall

GROUP = "app"
WRITE_BYTES = 65536


def protect(prod: LocalSite, dr: LocalSite, model: bytearray, count: int) -> str:
    """Pair, create ``disk0`` with ``count`` random writes on it, protect it; its NBD URI."""
    prod.pair_with(dr)
    volume = prod.api.post("/api/v1/volumes", {"name": "disk0", "size_bytes": len(model)})
    write(volume["nbd_uri"], model, random.Random(1), count=count)
    prod.api.post("/api/v1/groups", {"name": GROUP, "volumes": ["disk0"], "to": "dr",
                                     "checkpoint_interval_s": 0.5})
    prod.wait_protecting(GROUP)
    uri: str = volume["nbd_uri"]
    return uri


def write(uri: str, model: bytearray, rng: random.Random, count: int) -> int:
    """``count`` random 64 KiB writes through NBD, mirrored in ``model``; bytes written."""
    with NbdClient(uri) as client:
        for _ in range(count):
            offset = rng.randrange(0, len(model) - WRITE_BYTES, 4096)
            data = rng.randbytes(WRITE_BYTES)
            client.write(offset, data)
            model[offset : offset + WRITE_BYTES] = data
        client.flush()
    return count * WRITE_BYTES


def tag(prod: LocalSite, dr: LocalSite, name: str) -> int:
    """Tag a checkpoint at the protected site and wait until the recovery site has it."""
    checkpoint: int = prod.api.post(f"/api/v1/groups/{GROUP}/checkpoints", {"name": name})["id"]
    dr.wait_checkpoint(GROUP, checkpoint)
    return checkpoint


def sha256_of(uri: str, size_bytes: int) -> str:
    with NbdClient(uri) as client:
        return hashlib.sha256(client.read(0, size_bytes)).hexdigest()


def verify(dr: LocalSite, expected: dict[int, str], size_bytes: int) -> None:
    """Export each checkpoint at the recovery site: its sha256 must be the expected one."""
    for checkpoint, sha256 in expected.items():
        uri = seawall(dr, "export", GROUP, "disk0", "--checkpoint", str(checkpoint)).stdout
        assert sha256_of(uri.strip(), size_bytes) == sha256, checkpoint
        seawall(dr, "export", "--stop", uri.strip())


def states_until_protecting(site: LocalSite, timeout_s: float = 60.0) -> list[str]:
    """The group's states, as they change, until it is protecting."""
    states: list[str] = []
    deadline = time.monotonic() + timeout_s
    while not states or states[-1] != "protecting":
        assert time.monotonic() < deadline, f"no protection: {states}"
        state = site.group_status(GROUP)["state"]
        if not states or states[-1] != state:
            states.append(state)
        time.sleep(0.01)
    return states
