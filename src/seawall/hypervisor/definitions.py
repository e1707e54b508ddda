"""A captured VM definition, read back: its disks (with the group volume holding each) and
NICs, whichever adapter captured it. Pure: text in, records out.

Rules:
- ``libvirt-xml`` is read with ``libvirt_xml.parse_domain`` (the same reading as the
  adapter's inventory); ``qmp-json`` with ``qmp_inventory`` from the ``query-block``,
  ``query-rx-filter`` and ``info network`` the QMP adapter's ``definition`` holds.
- A disk's ``volume`` is the group volume that held it when the configuration was
  captured (``VmConfig.volumes``), or None for a disk the group did not protect (a
  CD-ROM, or one hot-plugged and not added).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from seawall.errors import CorruptData, ProtocolViolation
from seawall.hypervisor import qmp_inventory
from seawall.hypervisor.libvirt_xml import parse_domain
from seawall.wire.records import VmConfig


def describe(config: VmConfig) -> dict[str, Any]:
    """``disks`` (target, source, format, volume) and ``nics`` of a captured definition."""
    volumes = dict(config.volumes)
    disks: list[dict[str, Any]]
    if config.format == "libvirt-xml":
        try:
            domain = parse_domain(config.definition)
        except ProtocolViolation as exc:
            raise CorruptData(f"VM {config.name}: {exc.message}") from None
        disks = [{"target": d.target, "source": d.source, "format": d.format}
                 for d in domain.disks]
        nics = [asdict(nic) for nic in domain.nics]
    elif config.format == "qmp-json":
        try:
            view = json.loads(config.definition)
            disks = [{"target": d.info.target, "source": d.info.source,
                      "format": d.info.format}
                     for d in qmp_inventory.disks(view.get("query-block") or [])]
            nics = [asdict(nic) for nic in qmp_inventory.nics(
                view.get("query-rx-filter") or [], str(view.get("info network") or ""))]
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            raise CorruptData(f"VM {config.name}: its QMP definition does not read: "
                              f"{exc}") from None
    else:
        raise CorruptData(f"VM {config.name}: unknown definition format {config.format!r}")
    for disk in disks:
        disk["volume"] = volumes.get(disk["target"])
    return {"disks": disks, "nics": nics}
