"""The agent's control API about VMs: capture sinks, VM listings, VM configurations.

Rules and invariants: those of ``seawall.contract.agent`` (whose ``Request`` and ``Answer``
these build on): the site manager and the agent validate the same models, requests forbid
unknown fields and answers allow them. This module imports neither the agent nor the
manager.
"""

from __future__ import annotations

from pydantic import Field

from seawall.contract.agent import Answer, Request


class SinkCreate(Request):
    """``POST /volumes/sinks``: a capture sink for one disk of a VM on this agent's host
    (``seawall.agent.protect.sink``), the target of that disk's write-blocking mirror."""

    name: str
    size_bytes: int = Field(gt=0)
    vm_uuid: str = Field(min_length=1, max_length=64)
    disk: str = Field(min_length=1, max_length=64)


class VmDisk(Answer):
    target: str
    source: str
    format: str
    size_bytes: int
    skip_reason: str | None = None


class VmNic(Answer):
    kind: str
    source: str
    mac: str
    model: str


class VmDescription(Answer):
    name: str
    uuid: str
    state: str
    disks: list[VmDisk]
    nics: list[VmNic]
    mirror_problem: str | None = None
    """Why its hypervisor cannot run a write-blocking mirror (too old): not protectable."""


class VmListing(Answer):
    """``GET /vms``: the agent's ``--hypervisor`` (``none``: it has none) and its VMs."""

    hypervisor: str
    vms: list[VmDescription]


class VmConfigDisk(Answer):
    target: str
    source: str
    format: str
    volume: str | None
    """The group volume holding this disk; None for a disk the group did not protect."""


class VmConfigView(Answer):
    """``GET /groups/{id}/vms/{vm}`` at the recovery site: a VM's configuration at a
    checkpoint (the newest captured at or before it: ``config_seq``)."""

    name: str
    uuid: str
    checkpoint: int
    checkpoint_name: str
    config_seq: int
    config_time_ns: int
    format: str
    """``libvirt-xml`` (domain XML, no secrets) or ``qmp-json`` (the QMP adapter's view)."""
    disks: list[VmConfigDisk]
    nics: list[VmNic]
    definition: str
