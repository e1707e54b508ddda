"""Recovery operations end to end through the CLI: failover tests, clones, reports.

Two real sites; a reference model of the protected volume; every image is compared byte
for byte with what the volume held at the chosen checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from seawall.errors import InvalidInput
from seawall.http import JsonClient
from seawall.localsites import LocalSite
from seawall.nbd.blocking import NbdClient
from seawall.nbd.events import NbdError
from support.cli import refused, run_json, seawall
from support.groups import GROUP, protect, tag, write
from support.groups import sha256_of as image_sha256

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 16 << 20




def test_failover_test_gives_writable_images_while_protection_goes_on(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    prod_uri = protect(prod, dr, model, count=32)
    checkpoint = tag(prod, dr, "before-upgrade")
    at_checkpoint = hashlib.sha256(model).hexdigest()
    write(prod_uri, model, random.Random(2), count=16)  # after the checkpoint
    # Recovery scripts that leave their environment behind; the post one fails (a warning).
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    for stage, end in (("pre", "echo pre done"), ("post", "echo post broke >&2; exit 3")):
        script = dr.config.scripts_dir / f"{stage}.sh"  # named by the protected site
        script.write_text(f"#!/bin/sh\nenv > {env_dir}/$SEAWALL_STAGE\n{end}\n")
        script.chmod(0o755)
    seawall(prod, "group", "update", GROUP, "--pre-script", "pre.sh",
            "--post-script", "post.sh", "--script-timeout", "30s")

    test = run_json(dr, "failover", "test", GROUP, "--checkpoint", str(checkpoint))
    assert test["state"] == "running" and test["checkpoint"]["id"] == checkpoint
    assert test["checkpoint"]["name"] == "before-upgrade"
    assert 0 < test["rto_s"] < 10
    [image] = test["images"]
    assert image["volume"] == "disk0" and image["uri"].startswith("nbd+unix:///")
    assert image_sha256(image["uri"], VOLUME_BYTES) == at_checkpoint
    environments = {stage: dict(line.split("=", 1) for line in
                                (env_dir / stage).read_text().splitlines() if "=" in line)
                    for stage in ("pre", "post")}
    for stage, env in environments.items():
        assert (env["SEAWALL_GROUP"], env["SEAWALL_OPERATION"], env["SEAWALL_KIND"],
                env["SEAWALL_CHECKPOINT"], env["SEAWALL_STAGE"]) == (
            GROUP, test["id"], "failover-test", str(checkpoint), stage)
    assert "SEAWALL_IMAGES" not in environments["pre"]
    assert json.loads(environments["post"]["SEAWALL_IMAGES"]) == {"disk0": image["uri"]}
    pre, post = test["scripts"]["pre"], test["scripts"]["post"]
    assert (pre["exit_code"], pre["error"], pre["output"]) == (0, None, "pre done\n")
    assert (post["exit_code"], post["output"]) == (3, "post broke\n")
    assert test["error"] == ("warning: the post-recovery script post.sh failed "
                             "(exited with code 3); the images are kept")

    # The image takes writes (and zeroing), and reads them back.
    with NbdClient(image["uri"]) as client:
        client.write(4096, b"test-write" * 100)
        client.write_zeroes(1 << 20, 65536)
        client.flush()
        assert client.read(4096, 1000) == b"test-write" * 100
        assert client.read(1 << 20, 65536) == bytes(65536)

    # Meanwhile replication goes on, and neither the volume nor the journal saw the writes.
    write(prod_uri, model, random.Random(3), count=8)
    tag(prod, dr, "during-test")
    assert image_sha256(prod_uri, VOLUME_BYTES) == hashlib.sha256(model).hexdigest()
    export = dr.api.post("/api/v1/exports", {"group": GROUP, "volume": "disk0",
                                             "checkpoint": str(checkpoint)})
    assert image_sha256(export["uri"], VOLUME_BYTES) == at_checkpoint
    dr.api.post("/api/v1/exports/stop", {"uri": export["uri"]})
    status = dr.api.get(f"/api/v1/failover/{GROUP}")["operation"]
    assert status["images"][0]["scratch_used_bytes"] >= 4096

    # One test per group; none at the protected site; no unknown checkpoints.
    again = refused(dr, "failover", "test", GROUP)
    assert again.returncode == 4 and "already has a failover-test" in again.stderr
    assert "recovery site dr" in refused(prod, "failover", "test", GROUP).stderr

    notes = "<b>boots</b> & serves"
    report = run_json(dr, "failover", "stop", GROUP, "--result", "pass", "--notes", notes)
    assert report["state"] == "stopped" and report["result"] == "pass"
    with pytest.raises((NbdError, OSError)):
        image_sha256(image["uri"], VOLUME_BYTES)  # the image is gone with its scratch
    assert not list((dr.directory / "agent" / "scratch").glob("*/*"))
    stop_again = refused(dr, "failover", "stop", GROUP)
    assert stop_again.returncode == 4 and "no failover test" in stop_again.stderr
    unknown = refused(dr, "failover", "test", GROUP, "--checkpoint", "999999999")
    assert unknown.returncode == 3 and "no checkpoint 999999999" in unknown.stderr

    listed = run_json(dr, "report", "list")
    assert [r["id"] for r in listed if r["kind"] == "failover-test"] == [report["id"]]
    html_path = tmp_path / "report.html"
    shown = run_json(dr, "report", "show", report["id"], "--html", str(html_path))
    assert shown["group"] == GROUP and shown["site"] == "dr" and shown["notes"] == notes
    assert shown["checkpoint"]["id"] == checkpoint and shown["user"] == "admin"  # the token's
    assert shown["rto_s"] == test["rto_s"]
    steps = [step["step"] for step in shown["steps"]]
    assert steps[0] == "requested" and steps[-1] == "images discarded"
    assert steps.index("pre-recovery script succeeded") < steps.index("images exported")
    assert steps.index("every volume readable") < steps.index(
        "post-recovery script failed: exited with code 3")
    assert shown["scripts"] == test["scripts"] and shown["error"] == test["error"]
    page = html_path.read_text()
    assert "&lt;b&gt;boots&lt;/b&gt; &amp; serves" in page and "<b>boots" not in page
    assert "Recovery scripts" in page and "post broke" in page
    assert (dr.directory / "reports" / f"{report['id']}.html").read_text() == page

    # A failing pre script fails the test before anything is made, with a report.
    (dr.config.scripts_dir / "pre.sh").write_text("#!/bin/sh\necho database busy\nexit 1\n")
    failed = refused(dr, "failover", "test", GROUP)
    assert failed.returncode == 7 and "database busy" in " ".join(failed.stderr.split())
    [failed_report] = [r for r in run_json(dr, "report", "list")
                       if r["kind"] == "failover-test" and r["state"] == "failed"]
    steps = [s["step"] for s in run_json(dr, "report", "show", failed_report["id"])["steps"]]
    assert "pre-recovery script failed: exited with code 1" in steps
    assert "images exported" not in steps
    assert not list((dr.directory / "agent" / "scratch").glob("*/*"))
    assert run_json(dr, "failover", "status", GROUP)["operation"] is None


def test_scratch_limit_and_restarts(
    sites: tuple[LocalSite, LocalSite], kill_agent: Callable[[LocalSite], int],
) -> None:
    """A full scratch refuses writes with ENOSPC; a manager restart keeps a running test;
    an agent restart ends it, and the manager records it as interrupted."""
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    protect(prod, dr, model, count=32)
    tag(prod, dr, "tagged")
    test = run_json(dr, "failover", "test", GROUP, "--checkpoint", "latest-tagged",
                    "--scratch-max", "1M")
    assert test["checkpoint"]["name"] == "tagged"
    uri = test["images"][0]["uri"]
    with NbdClient(uri) as client:
        client.write(0, bytes([1]) * (900 << 10))
        with pytest.raises(NbdError) as full:
            client.write(1 << 20, bytes([2]) * (200 << 10))  # past the 1 MiB limit
        assert full.value.errno == 28  # ENOSPC
        assert client.read(1 << 20, 4096) == bytes(model[1 << 20 : (1 << 20) + 4096])
    status = run_json(dr, "failover", "status", GROUP)["operation"]
    assert status["scratch_alert"] and status["images"][0]["scratch_alert"]

    assert dr.process is not None
    dr.process.kill()  # the manager only: the agent and its images live on
    dr.process.wait()
    dr.start()
    status = run_json(dr, "failover", "status", GROUP)["operation"]
    assert status["id"] == test["id"] and status["state"] == "running"
    with NbdClient(uri) as client:
        assert client.read(0, 4096) == bytes([1]) * 4096

    kill_agent(dr)
    dr.stop()
    dr.start()
    assert run_json(dr, "failover", "status", GROUP)["operation"] is None
    [report] = run_json(dr, "report", "list")
    assert report["id"] == test["id"] and report["state"] == "interrupted"
    assert not list((dr.directory / "agent" / "scratch").glob("*/*"))
    run_json(dr, "failover", "test", GROUP)  # the group is free again
    seawall(dr, "failover", "stop", GROUP)


def test_clones_raw_and_qcow2_match_the_checkpoint(
    sites: tuple[LocalSite, LocalSite], tmp_path: Path,
) -> None:
    prod, dr = sites
    model = bytearray(VOLUME_BYTES)
    prod_uri = protect(prod, dr, model, count=32)
    with NbdClient(prod_uri) as client:  # the second half zero: the raw clone has holes
        client.write_zeroes(VOLUME_BYTES // 2, VOLUME_BYTES // 2)
        client.flush()
    model[VOLUME_BYTES // 2 :] = bytes(VOLUME_BYTES // 2)
    checkpoint = tag(prod, dr, "for-clone")
    reference = tmp_path / "reference.raw"
    reference.write_bytes(model)
    write(prod_uri, model, random.Random(4), count=16)

    clones = dr.config.clone_dir  # --to is relative to it
    raw = run_json(dr, "clone", GROUP, "--checkpoint", str(checkpoint), "--to", "raw")
    assert raw["state"] == "done" and raw["checkpoint"]["id"] == checkpoint
    raw_file = clones / "raw" / "disk0.raw"
    assert raw["outputs"][0]["path"] == str(raw_file)
    assert raw_file.read_bytes() == reference.read_bytes()
    assert raw_file.stat().st_blocks * 512 <= VOLUME_BYTES // 2  # zero chunks are holes
    assert raw_file.stat().st_mode & 0o777 == 0o600  # protected data: the service's only

    seawall(dr, "clone", GROUP, "--checkpoint", str(checkpoint), "--to",
            str(clones / "qcow2"), "--format", "qcow2")  # absolute, inside: taken too
    compared = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(reference),
         str(clones / "qcow2" / "disk0.qcow2")], capture_output=True, text=True)
    assert compared.returncode == 0, compared.stdout + compared.stderr

    taken = refused(dr, "clone", GROUP, "--checkpoint", str(checkpoint), "--to", "raw")
    assert taken.returncode == 4 and "exists already" in taken.stderr

    # Outside the clone directory nothing is written, whoever asks (issue 12: `--to /etc`
    # made /etc/disk0.raw; `--to /root/x` worked with an operator token).
    outside = tmp_path / "outside"
    outside.mkdir()
    (clones / "escape").symlink_to(outside)
    for to in ("/etc", str(outside), "../outside", "raw/../../..", "escape", "escape/deeper"):
        answer = refused(dr, "clone", GROUP, "--checkpoint", str(checkpoint), "--to", to)
        message = " ".join(answer.stderr.split())  # unwrapped
        assert answer.returncode == 2 and f"is outside {clones}:" in message, message
    operator = dr.api.post("/api/v1/users", {"name": "op", "role": "operator"})["token"]
    as_operator = JsonClient(dr.url, token=operator, what="dr", tls=dr.tls)
    for to in ("/root/x", "/etc"):
        with pytest.raises(InvalidInput, match=f"is outside {clones}"):
            as_operator.post("/api/v1/clones", {"group": GROUP, "checkpoint": str(checkpoint),
                                                "to": to})
    assert as_operator.post("/api/v1/clones", {"group": GROUP, "checkpoint": str(checkpoint),
                                               "to": "by-operator"})["state"] == "running"
    as_operator.close()
    assert not Path("/etc/disk0.raw").exists() and not Path("/root/x").exists()
    assert list(outside.iterdir()) == []
    deadline_s = time.monotonic() + 60
    while (clone_states := [r["state"] for r in run_json(dr, "report", "list")
                            if r["kind"] == "clone"]) != ["done"] * 3:
        assert time.monotonic() < deadline_s, clone_states
        time.sleep(0.2)
    assert (clones / "by-operator" / "disk0.raw").read_bytes() == reference.read_bytes()
    assert dr.api.get("/api/v1/exports") == []  # the clones' temporary exports are gone
