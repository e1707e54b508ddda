"""``open_hypervisor``: the adapter a ``--hypervisor`` spec names, connected.

Rules:
- ``none`` opens nothing (volume-only mode); ``libvirt:URI`` connects to libvirt and
  fails with ``Unavailable`` if it does not answer; ``qmp:DIR`` watches QEMU's QMP sockets
  in DIR.
- Each adapter's module is imported only when asked for: an agent without libvirt-python
  or qemu.qmp installed runs in the other modes.
"""

from __future__ import annotations

from pathlib import Path

from seawall.errors import InvalidInput
from seawall.hypervisor.base import Hypervisor, HypervisorSpec


async def open_hypervisor(spec: HypervisorSpec) -> Hypervisor | None:
    if spec.kind == "none":
        return None
    if spec.kind == "libvirt":
        try:
            from seawall.hypervisor.libvirt_adapter import LibvirtHypervisor
        except ImportError as exc:
            raise InvalidInput(f"--hypervisor libvirt needs libvirt-python: {exc}") from None
        return await LibvirtHypervisor.open(spec.location)
    try:
        from seawall.hypervisor.qmp_adapter import QmpHypervisor
    except ImportError as exc:
        raise InvalidInput(f"--hypervisor qmp needs qemu.qmp: {exc}") from None
    return QmpHypervisor(Path(spec.location))
