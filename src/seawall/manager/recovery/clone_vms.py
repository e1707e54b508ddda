"""A clone's VM definitions: for every VM of the checkpoint, a domain XML beside the
clone's images that points at them (pure: configurations and paths in, definitions out).

Rules:
- Only configurations captured from libvirt are turned into definitions; any other (a
  VM protected through QMP) is listed with the reason, and the images are the clone.
- A VM's disks are the clone's image files of the volumes that held them at that
  checkpoint; a disk whose volume the clone does not have is left out (with a note, by
  ``recovery_xml``). NICs stay on the networks they were on, host-side settings
  dropped: the definition is defined shut off, and the operator chooses where it runs.
- The domain is named ``VM-clone-DIR`` (DIR the clone's directory name), so it cannot
  take a production VM's name on the host it is defined on; its serial console is
  logged beside the images (``VM.console.log``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seawall.contract.vms import VmConfigView
from seawall.hypervisor.recovery_xml import FileDisk, RecoveryTarget, recovery_domain


@dataclass(frozen=True)
class CloneDefinition:
    vm: str
    domain: str  # the name it is defined under
    file_name: str  # VM.xml in the clone's directory
    xml: str | None  # None: not definable (see ``skipped``)
    notes: tuple[str, ...] = ()
    skipped: str | None = None


def clone_definitions(configs: list[VmConfigView], images: dict[str, tuple[Path, str]],
                      directory: Path, mark: dict[str, str],
                      host_path_exists: Callable[[str], bool]) -> list[CloneDefinition]:
    """``images``: volume -> (its image file, its format) in ``directory``."""
    definitions = []
    for config in configs:
        domain = f"{config.name}-clone-{directory.name}"
        file_name = f"{config.name}.xml"
        if config.format != "libvirt-xml":
            definitions.append(CloneDefinition(
                config.name, domain, file_name, None,
                skipped=f"captured through {config.format}, which libvirt cannot define"))
            continue
        disks = {disk.target: FileDisk(*images[disk.volume]) for disk in config.disks
                 if disk.volume is not None and disk.volume in images}
        recovered = recovery_domain(config.definition, RecoveryTarget(
            name=domain, disks=disks, network_map={}, default_network=None,
            keep_unmapped_nics=True, console_log=directory / f"{config.name}.console.log",
            mark={**mark, "vm": config.name}), host_path_exists)
        definitions.append(CloneDefinition(config.name, domain, file_name, recovered.xml,
                                           recovered.notes))
    return definitions
