"""Point-in-time exports checked with real NBD clients: qemu-img, qemu-io, nbdinfo, nbdcopy.

A volume is protected between two real sites and written with qemu-io patterns; the same
qemu-io commands build reference raw files, one per tagged checkpoint. At the recovery site
both checkpoints are exported at once and each must read back as its reference (and not as
the other one) through every client; a write through qemu-io must fail and change nothing;
``seawall export --stop`` must make the URI unusable while the other export goes on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from seawall.localsites import LocalSite
from support.cli import seawall

CLIENTS = ("qemu-img", "qemu-io", "nbdinfo", "nbdcopy")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.interop,
    pytest.mark.timeout(90),
    pytest.mark.skipif(any(shutil.which(c) is None for c in CLIENTS),
                       reason=f"needs {', '.join(CLIENTS)}"),
]

GROUP = "app"
VOLUME = "disk0"
VOLUME_BYTES = 16 << 20
FIRST = ["write -P 0x11 0 1M", "write -P 0x22 4M 512k", "write -P 0x5a 15M 1M"]
SECOND = ["write -P 0x33 512k 2M", "write -z 4M 256k", "write -P 0x44 10M 64k"]
"""Written after the first checkpoint: overlaps its patterns, zeroes part of one."""



def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"{' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def qemu_io(target: str, *commands: str, read_only: bool = False,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    options = ["-r"] if read_only else []
    arguments = [item for command in commands for item in ("-c", command)]
    return run("qemu-io", "-f", "raw", *options, *arguments, target, check=check)


def io_failed(result: subprocess.CompletedProcess[str]) -> bool:
    """qemu-io may exit 0 after a failed command: look at what it printed too."""
    output = result.stdout + result.stderr
    return (result.returncode != 0 or "failed" in output.lower()
            or "Pattern verification" in output or "Permission denied" in output
            or "not permitted" in output.lower())


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exports_interoperate_with_real_clients(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    token = seawall(dr, "site", "token").stdout.strip()
    seawall(prod, "pair", dr.url, "--token", token)
    seawall(prod, "volume", "create", VOLUME, "--size", "16M")
    uri = json.loads(seawall(prod, "volume", "list", "--json").stdout)[0]["nbd_uri"]
    seawall(prod, "group", "create", GROUP, "--volume", VOLUME, "--to", dr.name,
            "--checkpoint-interval", "1s")
    prod.wait_protecting(GROUP, timeout_s=30)

    first = tmp_path / "first.raw"
    second = tmp_path / "second.raw"
    first.write_bytes(bytes(VOLUME_BYTES))
    qemu_io(str(first), *FIRST)
    qemu_io(uri, *FIRST)
    first_id = int(seawall(prod, "checkpoint", "tag", GROUP, "--name", "first").stdout)
    shutil.copyfile(first, second)
    qemu_io(str(second), *SECOND)
    qemu_io(uri, *SECOND)
    second_id = int(seawall(prod, "checkpoint", "tag", GROUP, "--name", "second").stdout)
    assert sha256_file(first) != sha256_file(second)
    dr.wait_checkpoint(GROUP, second_id, timeout_s=30)

    first_uri = seawall(dr, "export", GROUP, VOLUME, "--checkpoint", str(first_id)).stdout.strip()
    second_uri = seawall(dr, "export", GROUP, VOLUME, "--checkpoint",
                         str(second_id)).stdout.strip()
    assert first_uri != second_uri
    listed = json.loads(seawall(dr, "export", "--list", "--json").stdout)
    assert {(e["uri"], e["checkpoint_id"]) for e in listed} == {
        (first_uri, first_id), (second_uri, second_id)}

    # qemu-img compare: each export is its reference, and not the other one
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(first), first_uri)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(second), second_uri)
    differs = run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(first), second_uri,
                  check=False)
    assert differs.returncode == 1, differs.stdout + differs.stderr

    # qemu-io pattern reads, read-only
    ok = qemu_io(first_uri, "read -P 0x11 0 1M", "read -P 0x22 4M 512k",
                 "read -P 0 1M 3M", "read -P 0x5a 15M 1M", read_only=True)
    assert not io_failed(ok), ok.stdout + ok.stderr
    ok = qemu_io(second_uri, "read -P 0x11 0 512k", "read -P 0x33 512k 2M",
                 "read -P 0 4M 256k", "read -P 0x22 4352k 256k", "read -P 0x44 10M 64k",
                 read_only=True)
    assert not io_failed(ok), ok.stdout + ok.stderr
    wrong = qemu_io(first_uri, "read -P 0x33 512k 2M", read_only=True, check=False)
    assert io_failed(wrong), "the first checkpoint shows data written after it"

    # nbdinfo: size and the read-only flag, as a client sees them
    info = json.loads(run("nbdinfo", "--json", first_uri).stdout)
    (export,) = info["exports"]
    assert export["export-size"] == VOLUME_BYTES
    assert export["is_read_only"] is True

    # nbdcopy the whole image out, then compare with the reference
    copy = tmp_path / "copy.raw"
    run("nbdcopy", second_uri, str(copy))
    assert sha256_file(copy) == sha256_file(second)

    # a write through qemu-io must fail and change nothing
    write = qemu_io(first_uri, "write -P 0x99 0 64k", check=False)
    assert io_failed(write), f"a write to a read-only export succeeded: {write.stdout}"
    zero = qemu_io(first_uri, "write -z 2M 64k", check=False)
    assert io_failed(zero), f"write -z to a read-only export succeeded: {zero.stdout}"
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(first), first_uri)

    # --stop ends one export: its URI no longer works, the other export goes on
    seawall(dr, "export", "--stop", first_uri)
    gone = run("qemu-img", "info", first_uri, check=False)
    assert gone.returncode != 0, gone.stdout
    gone = run("nbdinfo", first_uri, check=False)
    assert gone.returncode != 0, gone.stdout
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(second), second_uri)
    listed = json.loads(seawall(dr, "export", "--list", "--json").stdout)
    assert [e["uri"] for e in listed] == [second_uri]
    seawall(dr, "export", "--stop", second_uri)
    assert json.loads(seawall(dr, "export", "--list", "--json").stdout) == []
