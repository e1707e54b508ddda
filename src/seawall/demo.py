"""``seawall demo``: the whole product in one minute, proven byte for byte.

Two sites on localhost (real processes), paired; a volume with data written before
protection; a group protecting it; a random workload through NBD mirrored into a reference
image; a tagged checkpoint; more writes; then the tagged checkpoint and the latest one are
exported at the recovery site and compared, byte for byte, with the reference images of
those moments (and with ``qemu-img compare`` when installed). Exit status 0 only if every
comparison passed.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient

VOLUME_BYTES = 256 << 20
WORKLOAD_S = 4.0
console = Console(stderr=True, soft_wrap=True)


def step(text: str) -> None:
    console.print(f"[bold cyan]==>[/] {text}")


class Workload:
    """Random writes through NBD, mirrored into a reference image of the same size."""

    def __init__(self, uri: str, reference: Path, seed: int) -> None:
        self.client = NbdClient(uri).connect()
        self.reference = reference.open("r+b")
        self.random = random.Random(seed)
        self.writes = 0
        self.bytes_written = 0

    def write_once(self) -> None:
        length = self.random.choice((4096, 4096, 16384, 65536, 262144))
        offset = self.random.randrange(0, VOLUME_BYTES - length, 4096)
        data = self.random.randbytes(length)
        if self.random.random() < 0.05:
            self.client.write_zeroes(offset, length)
            data = bytes(length)
        else:
            self.client.write(offset, data)
        self.reference.seek(offset)
        self.reference.write(data)
        self.writes += 1
        self.bytes_written += length

    def run_for(self, seconds: float, site: LocalSite, group: str, rpo: list[float]) -> None:
        deadline = time.monotonic() + seconds
        next_sample = time.monotonic()
        while time.monotonic() < deadline:
            self.write_once()
            if time.monotonic() >= next_sample:
                value = site.group_status(group).get("rpo_s")
                if value is not None:
                    rpo.append(value)
                next_sample += 0.25

    def snapshot(self, path: Path) -> str:
        self.client.flush()
        self.reference.flush()
        shutil.copyfile(self.reference.name, path)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def close(self) -> None:
        self.client.close()
        self.reference.close()


def read_export_sha256(uri: str) -> str:
    digest = hashlib.sha256()
    with NbdClient(uri) as client:
        for offset in range(0, client.size, 4 << 20):
            digest.update(client.read(offset, min(4 << 20, client.size - offset)))
    return digest.hexdigest()


def qemu_img_compare(reference: Path, uri: str) -> bool | None:
    if shutil.which("qemu-img") is None:
        return None
    result = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(reference),
                             uri], capture_output=True, text=True)
    return result.returncode == 0


def verify(recovery: LocalSite, group: str, checkpoint_id: int, reference: Path,
           expected_sha256: str) -> bool:
    started = time.monotonic()
    export = recovery.api.post("/api/v1/exports", {"group": group, "volume": "disk0",
                                                   "checkpoint": str(checkpoint_id)})
    ready_ms = (time.monotonic() - started) * 1000
    uri = export["uri"]
    console.print(f"    export of checkpoint {checkpoint_id} ready in {ready_ms:.0f} ms: {uri}")
    actual = read_export_sha256(uri)
    same = actual == expected_sha256
    console.print(f"    sha256 reference {expected_sha256[:16]}…  export {actual[:16]}…  "
                  f"{'[green]identical[/]' if same else '[red]DIFFERENT[/]'}")
    compared = qemu_img_compare(reference, uri)
    if compared is not None:
        console.print(f"    qemu-img compare: "
                      f"{'[green]identical[/]' if compared else '[red]DIFFERENT[/]'}")
        same = same and compared
    recovery.api.post("/api/v1/exports/stop", {"uri": uri})
    return same


def run_demo(keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="seawall-demo-"))
    log_path = workdir / "sites.log"
    sites: list[LocalSite] = []
    try:
        with log_path.open("w") as log:
            return _demo(workdir, log, sites)
    finally:
        for site in sites:
            site.stop()
        if keep:
            console.print(f"kept {workdir} (site logs in {log_path})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _demo(workdir: Path, log: object, sites: list[LocalSite]) -> int:
    step(f"creating two sites in {workdir}")
    prod = LocalSite("prod", workdir / "prod", log)  # type: ignore[arg-type]
    dr = LocalSite("dr", workdir / "dr", log)  # type: ignore[arg-type]
    sites += [prod, dr]
    for site in sites:
        site.start()
        console.print(f"    site {site.name}: API {site.url}")
    step("pairing prod with dr (seawall site token / seawall pair)")
    prod.pair_with(dr)
    step(f"creating volume disk0 ({VOLUME_BYTES >> 20} MiB) at prod and writing data into it")
    volume = prod.api.post("/api/v1/volumes", {"name": "disk0", "size_bytes": VOLUME_BYTES})
    reference = workdir / "reference.raw"
    with reference.open("wb") as handle:
        handle.truncate(VOLUME_BYTES)
    workload = Workload(volume["nbd_uri"], reference, seed=2026)
    for _ in range(200):
        workload.write_once()
    step("protecting disk0 to dr (group app, checkpoint every 1s)")
    prod.api.post("/api/v1/groups", {"name": "app", "volumes": ["disk0"], "to": "dr",
                                     "checkpoint_interval_s": 1.0})
    _show_initial_sync(prod)
    rpo: list[float] = []
    step(f"writing through NBD for {WORKLOAD_S:.0f} s while replicating")
    workload.run_for(WORKLOAD_S, prod, "app", rpo)
    tagged_ref = workdir / "tagged.raw"
    tagged_sha = workload.snapshot(tagged_ref)
    tagged = prod.api.post("/api/v1/groups/app/checkpoints", {"name": "before-upgrade"})["id"]
    console.print(f"    tagged checkpoint {tagged} 'before-upgrade' after {workload.writes} "
                  "writes")
    step(f"writing for another {WORKLOAD_S:.0f} s")
    workload.run_for(WORKLOAD_S, prod, "app", rpo)
    latest_ref = workdir / "latest.raw"
    latest_sha = workload.snapshot(latest_ref)
    latest = prod.api.post("/api/v1/groups/app/checkpoints", {"name": "end"})["id"]
    console.print(f"    {workload.writes} writes, {workload.bytes_written >> 20} MiB in all")
    workload.close()
    dr.wait_checkpoint("app", latest)
    if rpo:
        console.print(f"    RPO measured during the workload: median {statistics.median(rpo):.2f}"
                      f" s, max {max(rpo):.2f} s ({len(rpo)} samples)")
    step("verifying at dr: export each checkpoint and compare with the reference")
    ok = verify(dr, "app", tagged, tagged_ref, tagged_sha)
    ok = verify(dr, "app", latest, latest_ref, latest_sha) and ok
    if ok:
        console.print("[bold green]demo passed:[/] every checkpoint read back byte-identical")
        return 0
    console.print("[bold red]demo FAILED:[/] a checkpoint differs from the reference")
    return 1


def _show_initial_sync(prod: LocalSite) -> None:
    columns = (TextColumn("    initial sync"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("sync", total=VOLUME_BYTES)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = prod.group_status("app")
            progress.update(task, completed=status["sync"]["done_bytes"])
            if status["state"] == "protecting":
                progress.update(task, completed=VOLUME_BYTES)
                return
            time.sleep(0.1)
    raise TimeoutError("initial sync did not finish in 300 s")
