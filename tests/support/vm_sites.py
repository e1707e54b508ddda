"""Two local sites whose protected agent watches a test QEMU's QMP directory (the QMP
hypervisor adapter), for the end-to-end tests of VM protection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seawall.config import CONFIG_NAME
from seawall.localsites import LocalSite
from support.qemu_vm import QemuVm
from support.sites import stop_for_sure


@contextmanager
def qmp_vm_sites(tmp_path: Path, vm: QemuVm) -> Iterator[tuple[LocalSite, LocalSite]]:
    """``prod`` (its agent with ``hypervisor: qmp:DIR`` of ``vm``) and ``dr``, paired."""
    log = (tmp_path / "sites.log").open("w")
    prod = LocalSite("prod", tmp_path / "prod", log)
    config_path = prod.directory / CONFIG_NAME
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "hypervisor": f"qmp:{vm.directory}"}))
    dr = LocalSite("dr", tmp_path / "dr", log)
    try:
        prod.launch()
        dr.launch()
        prod.wait_started()
        dr.wait_started()
        prod.pair_with(dr)
        yield prod, dr
    finally:
        for site in (prod, dr):
            stop_for_sure(site)
        log.close()
