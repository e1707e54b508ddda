"""Checks of the recovery of a protected libvirt guest at the recovery site: a failover
test that boots it, a clone that defines it."""

from __future__ import annotations

import contextlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from seawall.localsites import LocalSite
from support.cli import seawall
from support.guests import Console, Guest, GuestHost

ISOLATED = "seawall-isolated-app"


def failover_test_boots_the_guest(dr: LocalSite, host: GuestHost, guest: Guest,
                                  counter: int) -> None:
    """`failover test` at the latest tagged checkpoint (whose disk holds ``counter`` last)
    boots ``guest`` from the test's images on the group's isolated network, ready when its
    guest agent answers; the guest reads that counter from its disk; `failover stop`
    leaves no domain and no network behind. First, network maps that cannot be followed
    are refused, and nothing is started."""
    unknown = seawall(dr, "failover", "test", "app", "--network-map",
                      f"{guest.name}-nic=no-such-net", check=False)
    assert unknown.returncode == 3, unknown.stderr
    assert "network no-such-net does not exist at the recovery host" in unknown.stderr
    malformed = seawall(dr, "failover", "test", "app", "--network-map", "prod", check=False)
    assert malformed.returncode == 2 and "use KEY=NETWORK" in malformed.stderr
    assert "no failover" in seawall(dr, "failover", "status", "app").stderr
    test: dict[str, Any] = json.loads(seawall(dr, "failover", "test", "app", "--checkpoint",
                                              "latest-tagged", "--json").stdout)
    try:
        [vm] = test["vms"]
        assert (vm["vm"], vm["domain"], vm["state"]) == (guest.name, f"{guest.name}-test-app",
                                                         "ready"), vm
        assert vm["network"] == ISOLATED and vm["has_guest_agent"]
        assert test["rto_s"] <= vm["started_s"] <= vm["ready_s"] <= test["vms_ready_s"]
        console = Console(Path(vm["console_log"]))
        console.wait_for(rf"^sw-boot-counter {counter}$")  # the checkpoint's, not a later one
        assert console.io_errors() == []

        domain = ET.fromstring(host.connection.lookupByName(vm["domain"]).XMLDesc(0))
        sources = {d.find("target").get("dev"): d.find("source")  # type: ignore[union-attr]
                   for d in domain.iterfind("devices/disk")}
        for disk in ("vda", "vdb"):
            source = sources[disk]
            assert source is not None and source.get("protocol") == "nbd", disk
            assert source.find("host").get("socket") == str(dr.config.nbd_socket)  # type: ignore[union-attr]
        [nic] = domain.iterfind("devices/interface")
        assert nic.find("source").get("network") == ISOLATED  # type: ignore[union-attr]
        network = ET.fromstring(host.connection.networkLookupByName(ISOLATED).XMLDesc(0))
        assert network.find("forward") is None and network.find("ip") is None
    finally:
        seawall(dr, "failover", "stop", "app", "--result", "pass")
    assert f"{guest.name}-test-app" not in [d.name() for d in
                                            host.connection.listAllDomains(0)]
    assert ISOLATED not in host.connection.listNetworks()


def clone_defines_the_guest(dr: LocalSite, host: GuestHost, guest: Guest) -> None:
    """`clone --define` at the latest tagged checkpoint writes the guest's images and a
    domain definition pointing at them, defined shut off at the recovery host."""
    clone: dict[str, Any] = json.loads(seawall(
        dr, "clone", "app", "--checkpoint", "latest-tagged", "--to", "vm-clone", "--define",
        "--json").stdout)
    [definition] = clone["definitions"]
    domain_name = f"{guest.name}-clone-vm-clone"
    try:
        assert (definition["vm"], definition["domain"]) == (guest.name, domain_name)
        images = {Path(o["path"]).name: o["path"] for o in clone["outputs"]}
        domain = host.connection.lookupByName(domain_name)
        assert not domain.isActive() and domain.isPersistent()
        assert domain.UUIDString() == definition["defined_uuid"]
        defined = ET.fromstring(domain.XMLDesc(0))
        files = {d.find("target").get("dev"): d.find("source").get("file")  # type: ignore[union-attr]
                 for d in defined.iterfind("devices/disk") if d.get("device") == "disk"}
        assert files == {"vda": images[f"{guest.name}-vda.raw"],
                         "vdb": images[f"{guest.name}-vdb.raw"]}
        written = ET.fromstring(Path(definition["path"]).read_text())
        assert written.findtext("name") == domain_name
    finally:
        with contextlib.suppress(Exception):
            host.connection.lookupByName(domain_name).undefine()
