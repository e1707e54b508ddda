"""Two real sites driven through the CLI: every checkpoint verified byte for byte.

A reference model (a bytearray) receives exactly the writes the protected volume receives,
through qemu-io and our NBD client; at each tagged checkpoint its hash is recorded. The
recovery site must then export each of those checkpoints with exactly that content — also
across an outage of the recovery site (resume from the last acknowledged seq).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from support.cli import seawall

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 32 << 20




def export_sha256(uri: str) -> str:
    with NbdClient(uri) as client:
        assert client.size == VOLUME_BYTES
        return hashlib.sha256(client.read(0, client.size)).hexdigest()


def test_protect_replicate_and_verify_checkpoints(sites: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = sites
    token = seawall(dr, "site", "token").stdout.strip()
    seawall(prod, "pair", dr.url, "--token", token)
    seawall(prod, "volume", "create", "disk0", "--size", "32M")
    volumes = json.loads(seawall(prod, "volume", "list", "--json").stdout)
    assert [(v["name"], v["size"]) for v in volumes] == [("disk0", VOLUME_BYTES)]
    uri = volumes[0]["nbd_uri"]

    model = bytearray(VOLUME_BYTES)
    rng = random.Random(7)
    client = NbdClient(uri).connect()

    def write_random(count: int) -> None:
        for _ in range(count):
            length = rng.choice((512, 4096, 65536, 1 << 20))
            offset = rng.randrange(0, VOLUME_BYTES - length, 512)
            if rng.random() < 0.1:
                client.write_zeroes(offset, length)
                model[offset : offset + length] = bytes(length)
            else:
                data = rng.randbytes(length)
                client.write(offset, data)
                model[offset : offset + length] = data

    write_random(100)  # data that exists before protection: the initial sync must carry it
    seawall(prod, "group", "create", "app", "--volume", "disk0", "--to", "dr",
            "--checkpoint-interval", "500ms")
    prod.wait_protecting("app")

    expected: dict[int, str] = {}
    for round_index in range(3):
        write_random(150)
        if shutil.which("qemu-io"):
            offset = (round_index + 1) << 20
            subprocess.run(["qemu-io", "-f", "raw", "-c",
                            f"write -P {0x41 + round_index} {offset} 64k", uri],
                           check=True, capture_output=True)
            model[offset : offset + 65536] = bytes([0x41 + round_index]) * 65536
        tagger = dr if round_index == 2 else prod  # dr forwards it to prod (a peer call)
        checkpoint = int(seawall(tagger, "checkpoint", "tag", "app", "--name",
                                 f"round-{round_index}").stdout.strip())
        expected[checkpoint] = hashlib.sha256(model).hexdigest()

    # an outage of the recovery site: writes and a tag are buffered, then shipped on resume
    dr.stop()
    write_random(100)
    outage_checkpoint = int(seawall(prod, "checkpoint", "tag", "app", "--name", "outage").stdout)
    expected[outage_checkpoint] = hashlib.sha256(model).hexdigest()
    listed = json.loads(seawall(prod, "checkpoint", "list", "app", "--json").stdout)
    assert {c["id"]: c["replicated"] for c in listed}[outage_checkpoint] is False
    dr.start()
    client.close()

    for checkpoint in expected:
        dr.wait_checkpoint("app", checkpoint)
    at_dr = json.loads(seawall(dr, "checkpoint", "list", "app", "--json").stdout)
    at_prod = json.loads(seawall(prod, "checkpoint", "list", "app", "--json").stdout)
    assert set(expected) <= {c["id"] for c in at_dr}
    assert {c["id"] for c in at_dr} <= {c["id"] for c in at_prod}  # same ids at both sites
    names = {c["id"]: c["name"] for c in at_dr}
    assert names[outage_checkpoint] == "outage"

    for checkpoint, sha in expected.items():
        export_uri = seawall(dr, "export", "app", "disk0", "--checkpoint",
                             str(checkpoint)).stdout.strip()
        assert export_uri.startswith("nbd+unix:///")
        assert export_sha256(export_uri) == sha, f"checkpoint {checkpoint} differs"
        seawall(dr, "export", "--stop", export_uri)


def test_pairing_and_errors_change_nothing(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    wrong = seawall(prod, "pair", dr.url, "--token", "swpt_not-a-token", check=False)
    assert wrong.returncode == 6 and "token" in wrong.stderr
    assert json.loads(seawall(prod, "peer", "list", "--json").stdout) == []
    assert json.loads(seawall(dr, "peer", "list", "--json").stdout) == []
    token = seawall(dr, "site", "token").stdout.strip()
    # Pairing runs over HTTPS: dr's token names dr's certificate; any other server (here
    # prod's own API) is refused at the handshake, so the token never reaches it.
    elsewhere = seawall(prod, "pair", prod.url, "--token", token, check=False)
    assert elsewhere.returncode == 7 and f"not {dr.fingerprint}" in " ".join(
        elsewhere.stderr.split()), elsewhere.stderr
    plain = seawall(prod, "pair", dr.url.replace("https:", "http:"), "--token", token,
                    check=False)  # plain HTTP to a site serving HTTPS: no answer
    assert plain.returncode == 7, plain.stderr
    seawall(prod, "pair", dr.url, "--token", token)  # still unused: nothing was sent
    reused = seawall(prod, "pair", dr.url, "--token", token, check=False)
    assert reused.returncode == 6
    at_prod = json.loads(seawall(prod, "peer", "list", "--json").stdout)
    at_dr = json.loads(seawall(dr, "peer", "list", "--json").stdout)
    assert [p["name"] for p in at_prod] == ["dr"] and [p["name"] for p in at_dr] == ["prod"]
    # Each pinned the other's certificate, the one its agent presents.
    assert at_prod[0]["fingerprint"] == dr.config.identity().fingerprint
    assert at_dr[0]["fingerprint"] == prod.config.identity().fingerprint

    seawall(prod, "volume", "create", "disk0", "--size", "1M")
    existing = tmp_path / "existing.raw"
    existing.write_bytes(b"\x5a" * (1 << 20))
    added = json.loads(seawall(prod, "volume", "add", "disk1", "--path", str(existing),
                               "--json").stdout)
    assert added["size"] == 1 << 20
    with NbdClient(added["nbd_uri"]) as client:
        assert client.read(0, 4096) == b"\x5a" * 4096
    duplicate = seawall(prod, "volume", "create", "disk0", "--size", "1M", check=False)
    assert duplicate.returncode == 4
    no_peer = seawall(prod, "group", "create", "g", "--volume", "disk0", "--to", "nowhere",
                      check=False)
    assert no_peer.returncode == 3 and "nowhere" in no_peer.stderr
    assert json.loads(seawall(prod, "group", "list", "--json").stdout) == []
    seawall(prod, "group", "create", "app", "--volume", "disk0", "--to", "dr")
    missing = seawall(dr, "export", "app", "disk0", "--checkpoint", "999999", check=False)
    assert missing.returncode == 5 and "has not reached the recovery site" in missing.stderr
    wrong_site = seawall(prod, "export", "app", "disk0", check=False)
    assert wrong_site.returncode != 0 and "recovery site" in wrong_site.stderr
    bad_size = seawall(prod, "volume", "create", "disk1", "--size", "lots", check=False)
    assert bad_size.returncode == 2 and "invalid size" in bad_size.stderr


def test_buffer_overflow_tracks_then_bitmap_syncs_exactly(tmp_path: Path) -> None:
    """Past 90% of its memory budget a group drops its buffer and tracks dirty ranges; the
    bitmap sync afterwards ships only those, and old and new checkpoints are exact."""
    log = (tmp_path / "sites.log").open("w")
    prod = LocalSite("prod", tmp_path / "prod", log, buffer_bytes=2 << 20)
    dr = LocalSite("dr", tmp_path / "dr", log)
    try:
        prod.start()
        dr.start()
        prod.pair_with(dr)
        volume = prod.api.post("/api/v1/volumes", {"name": "disk0", "size_bytes": 16 << 20})
        prod.api.post("/api/v1/groups", {"name": "app", "volumes": ["disk0"], "to": "dr",
                                         "checkpoint_interval_s": 0.5})
        prod.wait_protecting("app")
        model = bytearray(16 << 20)
        rng = random.Random(3)
        with NbdClient(volume["nbd_uri"]) as client:
            client.write(0, rng.randbytes(1 << 20))
            model[0 : 1 << 20] = client.read(0, 1 << 20)
            client.flush()
        before = prod.api.post("/api/v1/groups/app/checkpoints", {"name": "before"})["id"]
        dr.wait_checkpoint("app", before)
        before_hash = hashlib.sha256(model).hexdigest()
        dr.stop()
        with NbdClient(volume["nbd_uri"]) as client:
            for _ in range(96):  # 6 MiB of writes against a 2 MiB buffer, link down
                offset = rng.randrange(0, (16 << 20) - 65536, 4096)
                data = rng.randbytes(65536)
                client.write(offset, data)
                model[offset : offset + 65536] = data
            client.flush()
        status = prod.group_status("app")
        assert status["overflows"] >= 1
        assert status["buffered_bytes"] <= 2 << 20
        assert status["state"] == "bitmap-sync" and status["phase"] == "tracking"
        assert 0 < status["dirty_bytes"] <= 96 * 65536
        dr.start()
        prod.wait_protecting("app")
        status = prod.group_status("app")
        assert 0 < status["sync"]["shipped_bytes"] <= 96 * 65536  # not the whole volume
        checkpoint = prod.api.post("/api/v1/groups/app/checkpoints", {"name": "after"})["id"]
        dr.wait_checkpoint("app", checkpoint)
        for checkpoint_id, expected in ((before, before_hash),
                                        (checkpoint, hashlib.sha256(model).hexdigest())):
            uri = seawall(dr, "export", "app", "disk0", "--checkpoint", str(checkpoint_id))
            with NbdClient(uri.stdout.strip()) as client:
                assert hashlib.sha256(client.read(0, 16 << 20)).hexdigest() == expected
    finally:
        prod.stop()
        dr.stop()
        log.close()
