"""A group's members changed, groups deleted, volumes removed: two real sites, the CLI.

One pair of sites serves the module (the tests run in order on it). Every checkpoint is
read back at the recovery site through an NBD export and compared byte for byte with a
reference model of each volume taken when the checkpoint was tagged (nothing else writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seawall.errors import SeawallError
from seawall.localsites import LocalSite
from support.cli import refused, run_json, seawall
from support.groups import sha256_of, write
from support.hosts import Host
from support.qemu_vm import VM_UUID, QemuVm
from support.sites import kill_agent, running_pair

pytestmark = pytest.mark.e2e
VOLUME_BYTES = 4 << 20
GROUP = "app"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSite, LocalSite]]:
    """A started, paired ``prod`` and ``dr``, shared by the tests of this module."""
    directory = tmp_path_factory.mktemp("members")
    with (directory / "sites.log").open("w") as log, running_pair(
            LocalSite("prod", directory / "prod", log),
            LocalSite("dr", directory / "dr", log)) as pair:
        yield pair


class Volume:
    """A volume of ``prod`` (on its own agent, or on ``host``) and its reference model."""

    def __init__(self, prod: LocalSite, name: str, seed: int, host: Host | None = None,
                 certificates: Path | None = None) -> None:
        self.name = name
        self.model = bytearray(VOLUME_BYTES)
        made = prod.api.post("/api/v1/volumes", {"name": name, "size_bytes": VOLUME_BYTES,
                                                 "agent": host.name if host else None})
        self.uri = (made["nbd_uri"] if host is None
                    else f"{made['nbd_tcp_uri']}?tls-certificates={certificates}")
        self.rng = random.Random(seed)

    def write(self, count: int = 8) -> None:
        write(self.uri, self.model, self.rng, count)

    def sha256(self) -> str:
        return hashlib.sha256(self.model).hexdigest()


def tag(prod: LocalSite, dr: LocalSite, name: str, group: str = GROUP) -> int:
    checkpoint: int = prod.api.post(f"/api/v1/groups/{group}/checkpoints", {"name": name})["id"]
    dr.wait_checkpoint(group, checkpoint)
    return checkpoint


def exported_sha256(dr: LocalSite, volume: str, checkpoint: int, group: str = GROUP) -> str:
    """The sha256 of ``volume`` read whole from an export of ``checkpoint`` (through the API:
    quicker than two CLI runs; the refusals below go through the CLI)."""
    uri = dr.api.post("/api/v1/exports", {"group": group, "volume": volume,
                                          "checkpoint": str(checkpoint)})["uri"]
    try:
        return sha256_of(uri, VOLUME_BYTES)
    finally:
        dr.api.post("/api/v1/exports/stop", {"uri": uri})


def listed(dr: LocalSite, group: str = GROUP) -> dict[int, dict[str, Any]]:
    return {c["id"]: c for c in dr.api.get(f"/api/v1/groups/{group}/checkpoints")}


def shown(site: LocalSite, group: str) -> dict[str, str | None]:
    """The group's volumes as ``group show`` has them (API), name -> agent."""
    volumes = site.api.get(f"/api/v1/groups/{group}/settings")["volumes"]
    return {v["name"]: v.get("agent") for v in volumes}


def wait_protecting_again(site: LocalSite, timeout_s: float = 60.0) -> None:
    """Wait until the site's agent is back (its keeper restarts it) and protects ``GROUP``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(SeawallError):
            if site.group_status(GROUP)["state"] == "protecting":
                return
        time.sleep(0.1)
    raise AssertionError(f"group {GROUP} not protecting again at {site.name}")


def as_user(site: LocalSite, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seawall", *args], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "SEAWALL_URL": site.url, "SEAWALL_TOKEN": token})


def test_vm_show_of_a_group_spanning_agents(pair: tuple[LocalSite, LocalSite],
                                            vm: QemuVm) -> None:
    """A VM on a joined agent (the QMP adapter) and a volume of the site's own agent: `vm
    show` at either site finds the VM's configuration in its agent's member journal, at
    the group checkpoint's marker there. (First in the module: the later tests leave
    stopped agents joined.)"""
    prod, dr = pair
    log = (prod.directory.parent / "hv.log").open("w")
    host = Host("hv", prod.directory.parent / "hv", log)
    try:
        token = prod.api.post("/api/v1/agents/token", {})["token"]
        host.run(*host.join_args(prod, token), "--hypervisor", f"qmp:{vm.directory}")
        host.wait_reachable(prod)
        Volume(prod, "plain", 20)
        seawall(prod, "group", "create", "vms", "--volume", "plain", "--vm", "vm1",
                "--to", "dr", "--checkpoint-interval", "200ms")
        prod.wait_protecting("vms")
        checkpoint = tag(prod, dr, "c1", "vms")
        for site in (prod, dr):
            shown_vm = run_json(site, "vm", "show", "vms", "vm1", "--checkpoint",
                                str(checkpoint))
            assert shown_vm["uuid"] == VM_UUID and shown_vm["checkpoint"] == checkpoint
            assert shown_vm["checkpoint_name"] == "c1" and shown_vm["member"].endswith(".1")
            assert {d["target"]: d["volume"] for d in shown_vm["disks"]} == {
                "vda": "vm1-vda", "vdb": "vm1-vdb", "cd0": None}, site.name
        assert "no configuration of VM 'mail'" in refused(prod, "vm", "show", "vms",
                                                          "mail").stderr
        run_json(prod, "group", "delete", "vms", "--yes")
        seawall(prod, "agent", "remove", "hv")  # the next tests make volumes: all agents up
        seawall(prod, "volume", "remove", "plain")
    finally:
        host.stop()
        log.close()


def test_members_change_then_bad_changes_then_deletes(
        pair: tuple[LocalSite, LocalSite]) -> None:
    """In this order, on one pair of sites: each step takes the groups as the one before
    left them (one test, so that no test runner can split or reorder the steps)."""
    members_added_and_removed_read_back_exactly(pair)
    bad_member_changes_change_nothing(pair)
    delete_admin_only_refused_during_a_failover_test_and_keeps_replicas(pair)


def members_added_and_removed_read_back_exactly(pair: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = pair
    disk0, disk1 = Volume(prod, "disk0", 1), Volume(prod, "disk1", 2)
    disk0.write()
    disk1.write()
    seawall(prod, "group", "create", GROUP, "--volume", "disk0", "--to", "dr",
            "--checkpoint-interval", "500ms")
    prod.wait_protecting(GROUP)
    before_add = tag(prod, dr, "before-add")
    disk0_before_add = disk0.sha256()

    disk0.write()
    added = run_json(prod, "group", "update", GROUP, "--add-volume", "disk1")
    assert added["added"] == ["disk1"] and added["warnings"] == []
    disk0.write()  # the other member keeps replicating during disk1's initial sync
    disk1.write()
    prod.wait_protecting(GROUP)
    after_add = tag(prod, dr, "after-add")
    disk0_after_add, disk1_after_add = disk0.sha256(), disk1.sha256()
    for site in (prod, dr):
        show = run_json(site, "group", "show", GROUP)
        assert [v["name"] for v in show["volumes"]] == ["disk0", "disk1"], site.name
    assert exported_sha256(dr, "disk0", after_add) == disk0_after_add
    assert exported_sha256(dr, "disk1", after_add) == disk1_after_add
    assert exported_sha256(dr, "disk0", before_add) == disk0_before_add
    at_dr = listed(dr)
    assert at_dr[before_add]["volumes"] == ["disk0"]
    assert at_dr[after_add]["volumes"] == ["disk0", "disk1"]
    too_early = refused(dr, "export", GROUP, "disk1", "--checkpoint", str(before_add))
    assert "added to group app after checkpoint" in too_early.stderr
    drill = run_json(dr, "failover", "test", GROUP, "--checkpoint", str(before_add))
    assert [image["volume"] for image in drill["images"]] == ["disk0"]  # as the group was
    seawall(dr, "failover", "stop", GROUP, "--result", "pass")

    removed = run_json(prod, "group", "update", GROUP, "--remove-volume", "disk0")
    assert removed["removed"] == ["disk0"] and removed["warnings"] == []
    disk0.write()  # no longer captured
    disk1.write()
    after_remove = tag(prod, dr, "after-remove")
    assert exported_sha256(dr, "disk1", after_remove) == disk1.sha256()
    # The removed volume's history: readable at the checkpoints that include it.
    assert exported_sha256(dr, "disk0", after_add) == disk0_after_add
    assert exported_sha256(dr, "disk0", before_add) == disk0_before_add
    assert listed(dr)[after_remove]["volumes"] == ["disk1"]
    gone = refused(dr, "export", GROUP, "disk0", "--checkpoint", str(after_remove))
    assert "removed from group app before checkpoint" in gone.stderr
    assert shown(dr, GROUP) == {"disk1": None}
    assert prod.group_status(GROUP)["state"] == "protecting"

    # Both agents killed: each comes back from its saved state (the member left at the
    # protected site, the retired volume kept at the recovery site) and it all goes on.
    for site in (prod, dr):
        kill_agent(site)
    disk1_before_crash = disk1.sha256()
    wait_protecting_again(prod)
    disk1.write()
    after_crash = tag(prod, dr, "after-crash")
    assert exported_sha256(dr, "disk1", after_crash) == disk1.sha256()
    assert exported_sha256(dr, "disk1", after_remove) == disk1_before_crash
    assert exported_sha256(dr, "disk0", after_add) == disk0_after_add


def bad_member_changes_change_nothing(pair: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = pair
    Volume(prod, "disk2", 3)
    seawall(prod, "group", "create", "other", "--volume", "disk2", "--to", "dr")
    before = [shown(site, GROUP) for site in (prod, dr)]
    last = refused(prod, "group", "update", GROUP, "--remove-volume", "disk1")
    assert "no volume: delete the group instead (`seawall group delete app`)" in last.stderr
    unknown = refused(prod, "group", "update", GROUP, "--add-volume", "nosuch")
    assert "no volume named 'nosuch'" in unknown.stderr
    taken = refused(prod, "group", "update", GROUP, "--add-volume", "disk2")
    assert "volume 'disk2' is already in group 'other'" in taken.stderr
    not_member = refused(prod, "group", "update", GROUP, "--remove-volume", "disk2")
    assert "group app has no volume 'disk2'" in not_member.stderr
    missing = refused(prod, "group", "update", "nosuch", "--add-volume", "disk0")
    assert "no group named 'nosuch'" in missing.stderr
    at_recovery = refused(dr, "group", "update", GROUP, "--add-volume", "disk0")
    assert "at its protected site (prod)" in at_recovery.stderr
    after = [shown(site, GROUP) for site in (prod, dr)]
    assert after == before

    # volume remove: refused in a group (named); a created one's file goes, an added
    # one is only forgotten.
    in_group = refused(prod, "volume", "remove", "disk1")
    assert "volume 'disk1' is in group 'app'" in in_group.stderr
    path = Path(run_json(prod, "volume", "remove", "disk0")["path"])
    assert not path.exists()
    outside = prod.directory / "outside.raw"
    outside.write_bytes(b"\1" * 65536)
    seawall(prod, "volume", "add", "extra", "--path", str(outside))
    text = seawall(prod, "volume", "remove", "extra").stderr
    assert "only forgotten" in text and outside.read_bytes() == b"\1" * 65536
    names = {v["name"] for v in run_json(prod, "volume", "list")}
    assert not names & {"disk0", "extra"} and "disk1" in names
    assert "no volume named 'disk0'" in refused(prod, "volume", "remove", "disk0").stderr


def delete_admin_only_refused_during_a_failover_test_and_keeps_replicas(
        pair: tuple[LocalSite, LocalSite]) -> None:
    prod, dr = pair
    tokens = {role: seawall(prod, "user", "create", f"a-{role}", "--role", role).stdout.strip()
              for role in ("viewer", "operator")}
    for role, token in tokens.items():
        denied = as_user(prod, token, "group", "delete", GROUP, "--yes")
        assert denied.returncode == 6 and "needs the admin role" in denied.stderr, role
    assert "give --yes" in refused(prod, "group", "delete", GROUP).stderr

    test = run_json(dr, "failover", "test", "other")
    busy = refused(prod, "group", "delete", "other", "--yes")
    assert f"while a failover test runs at dr (operation {test['id']})" in busy.stderr
    assert "other" in {g["name"] for g in run_json(dr, "group", "list")}
    seawall(dr, "failover", "stop", "other", "--result", "pass")

    disk1_model = json.loads(seawall(prod, "volume", "list", "--json").stdout)
    assert any(v["name"] == "disk1" and v["group"] == GROUP for v in disk1_model)
    uri = next(v["nbd_uri"] for v in disk1_model if v["name"] == "disk1")
    expected = sha256_of(uri, VOLUME_BYTES)  # nothing writes to it any more
    newest = tag(prod, dr, "last")
    journal_dir = dr.config.journals_dir
    assert any(journal_dir.iterdir())
    deleted = run_json(prod, "group", "delete", GROUP, "--keep-replicas", "--yes")
    assert deleted["checkpoint"] is not None and deleted["checkpoint"] >= newest
    kept = Path(deleted["kept_replicas"]["disk1"])
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == expected
    assert set(deleted["kept_replicas"]) == {"disk1"}  # disk0 had left the group
    for site in (prod, dr):
        assert GROUP not in {g["name"] for g in run_json(site, "group", "list")}, site.name
    groups = {v["name"]: v["group"] for v in run_json(prod, "volume", "list")}
    assert groups == {"disk1": None, "disk2": "other"}
    events = run_json(prod, "event", "list", "--group", GROUP)
    assert any(e["operation"] == "delete group" and e["outcome"] == "ok" for e in events)

    # A recovery site that does not answer: nothing changes.
    dr.stop()
    unreachable = refused(prod, "group", "delete", "other", "--yes")
    assert "dr" in unreachable.stderr
    assert "other" in {g["name"] for g in run_json(prod, "group", "list")}
    dr.start()
    deleted = run_json(prod, "group", "delete", "other", "--yes")
    assert deleted["kept_replicas"] == {}
    assert [p.name for p in journal_dir.iterdir()] == [kept.parent.name]  # app-replicas


def test_members_of_a_group_spanning_agents(pair: tuple[LocalSite, LocalSite]) -> None:
    """A volume of a member agent joins that agent's stream, one leaves it, a volume of a
    third agent makes it a member, the last volume of a member agent leaving ends it;
    every group checkpoint reads back exactly, older ones stay offered. The lead's last
    volume cannot leave."""
    prod, dr = pair
    log = (prod.directory.parent / "hosts.log").open("w")
    host2 = Host("host2", prod.directory.parent / "host2", log)
    host3 = Host("host3", prod.directory.parent / "host3", log)
    try:
        host2.join(prod)
        certificates = host2.client_certificates(prod.directory.parent / "nbd-client")
        s0 = Volume(prod, "s0", 10)
        s1, s2 = (Volume(prod, name, seed, host2, certificates)
                  for name, seed in (("s1", 11), ("s2", 12)))
        for disk in (s0, s1, s2):
            disk.write(4)
        seawall(prod, "group", "create", "span", "--volume", "s0", "--volume", "s1",
                "--to", "dr", "--checkpoint-interval", "200ms")
        prod.wait_protecting("span")
        first = tag(prod, dr, "first", "span")
        s1_first = s1.sha256()

        added = run_json(prod, "group", "update", "span", "--add-volume", "s2")
        assert added["added"] == ["s2"] and added["warnings"] == []
        for disk in (s0, s1, s2):
            disk.write(4)
        prod.wait_protecting("span")
        second = tag(prod, dr, "second", "span")
        expected = {disk.name: disk.sha256() for disk in (s0, s1, s2)}
        for site in (prod, dr):
            assert shown(site, "span") == {"s0": "prod", "s1": "host2", "s2": "host2"}
        for name, sha256 in expected.items():
            assert exported_sha256(dr, name, second, "span") == sha256, name
        assert exported_sha256(dr, "s1", first, "span") == s1_first

        run_json(prod, "group", "update", "span", "--remove-volume", "s1")
        s1.write(4)  # no longer captured
        s2.write(4)
        third = tag(prod, dr, "third", "span")
        assert exported_sha256(dr, "s2", third, "span") == s2.sha256()
        assert exported_sha256(dr, "s1", second, "span") == expected["s1"]  # its history
        gone = refused(dr, "export", "span", "s1", "--checkpoint", str(third))
        assert "removed from group span before checkpoint" in gone.stderr

        lead = refused(prod, "group", "update", "span", "--remove-volume", "s0")
        assert "leave the lead agent prod of group span with no volume" in lead.stderr

        # A volume of an agent that is not a member yet: the agent joins the group.
        host3.join(prod)
        s3 = Volume(prod, "s3", 13, host3, host3.client_certificates(
            prod.directory.parent / "nbd-client3"))
        s3.write(4)
        joined = run_json(prod, "group", "update", "span", "--add-volume", "s3")
        assert joined["added"] == ["s3"]
        for disk in (s0, s2, s3):
            disk.write(4)
        prod.wait_protecting("span")
        fourth = tag(prod, dr, "fourth", "span")
        for disk in (s0, s2, s3):
            assert exported_sha256(dr, disk.name, fourth, "span") == disk.sha256(), disk.name
        assert {third, fourth} <= set(listed(dr, "span"))  # older ones still offered
        early = refused(dr, "export", "span", "s3", "--checkpoint", str(third))
        assert "added to group span after checkpoint" in early.stderr
        assert shown(prod, "span") == {"s0": "prod", "s2": "host2", "s3": "host3"}

        # host2's last volume leaves: host2 is a member no more; its history stays.
        s2_fourth = s2.sha256()
        left = run_json(prod, "group", "update", "span", "--remove-volume", "s2")
        assert left["removed"] == ["s2"] and left["warnings"] == []
        for disk in (s0, s2, s3):
            disk.write(4)
        fifth = tag(prod, dr, "fifth", "span")
        for disk in (s0, s3):
            assert exported_sha256(dr, disk.name, fifth, "span") == disk.sha256(), disk.name
        assert exported_sha256(dr, "s2", fourth, "span") == s2_fourth
        late = refused(dr, "export", "span", "s2", "--checkpoint", str(fifth))
        assert "removed from group span before checkpoint" in late.stderr
        for site in (prod, dr):
            assert shown(site, "span") == {"s0": "prod", "s3": "host3"}, site.name
        members = prod.group_status("span")["members"]
        assert [m["agent"] for m in members] == ["prod", "host3"]
        deleted = run_json(prod, "group", "delete", "span", "--yes", "--keep-replicas")
        assert deleted["checkpoint"] >= fifth  # the newest group checkpoint, for every member
        assert set(deleted["kept_replicas"]) == {"s0", "s3"}  # host2 had left the group
        for disk in (s0, s3):
            kept = Path(deleted["kept_replicas"][disk.name])
            assert hashlib.sha256(kept.read_bytes()).hexdigest() == disk.sha256(), disk.name
        for site in (prod, dr):
            assert "span" not in {g["name"] for g in run_json(site, "group", "list")}
        assert all(v["group"] is None for v in run_json(prod, "volume", "list")
                   if v["name"] in ("s0", "s2", "s3"))
    finally:
        host2.stop()
        host3.stop()
        log.close()

