"""Two local sites whose protected agent watches a test QEMU's QMP directory (the QMP
hypervisor adapter), for the end-to-end tests of VM protection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seawall.localsites import LocalSite
from support.qemu_vm import QemuVm
from support.sites import configure, running_pair


@contextmanager
def qmp_vm_sites(tmp_path: Path, vm: QemuVm,
                 **settings: Any) -> Iterator[tuple[LocalSite, LocalSite]]:
    """``prod`` (its agent with ``hypervisor: qmp:DIR`` of ``vm``, and ``settings``) and
    ``dr``, started and paired; one log, ``tmp_path/sites.log``."""
    with (tmp_path / "sites.log").open("w") as log:
        prod = LocalSite("prod", tmp_path / "prod", log)
        configure(prod, hypervisor=f"qmp:{vm.directory}", **settings)
        with running_pair(prod, LocalSite("dr", tmp_path / "dr", log)) as pair:
            yield pair
