"""The agent: one object that owns a host's data path and the state it must remember.

Rules and invariants:
- ``agent/state.json`` is written (atomically) before an operation is acknowledged, so a
  restarted agent serves the same volumes and resumes the same groups by itself.
- A volume belongs to at most one protection group; a group's volumes are captured from
  the moment the recovery site answers (see ``ProtectedGroup``).
- A volume is a file or a capture sink of one VM disk (``SinkVolume``: no file, at most
  one per VM disk); a group with sinks gets a ``Splitter`` driving their mirrors through
  ``hypervisor`` (none: the sinks stay ``sync-required``).
- Replication both ways runs over mutual TLS with the site's identity; each group brings
  the certificate pinned for its peer site (``seawall.tls``).
- This class does orchestration only; protocols live in ``nbd``/``wire``, storage in
  ``journal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from seawall.agent.failover.drills import FailoverTests
from seawall.agent.failover.live import LiveFailovers
from seawall.agent.failover.source import SourceFailover
from seawall.agent.failover.vm_boot import RecoveredVms
from seawall.agent.frontend.backend import ExportBackend
from seawall.agent.frontend.server import NbdFrontend
from seawall.agent.images.exports import ExportRecord, ExportRegistry
from seawall.agent.membership import Membership
from seawall.agent.protect.coordination import CoordinatedGroups
from seawall.agent.protect.group import ProtectedGroup
from seawall.agent.protect.quiesce import Quiescer
from seawall.agent.protect.quiesce_schedule import QuiesceSchedule
from seawall.agent.protect.shipper import Shipper
from seawall.agent.protect.sink import ProtectedVolume, SinkVolume
from seawall.agent.protect.splitter import Splitter
from seawall.agent.protect.vm_watch import VmWatch
from seawall.agent.protect.volumes import FileVolume, create_volume_file, device_size_bytes
from seawall.agent.recover.group import RecoveryGroup
from seawall.agent.recover.receiver import ReplicationServer
from seawall.agent.state import AgentState, SavedVolume
from seawall.agent.watchdog import SINK_CONNECTIONS_FILE
from seawall.config import SiteConfig
from seawall.confined import inside_any
from seawall.contract.agent import ProtectionChange, ProtectionSpec, RecoverySpec, RetentionChange
from seawall.errors import Conflict, InvalidInput, NotFound
from seawall.hypervisor.base import Hypervisor, parse_hypervisor_spec
from seawall.hypervisor.factory import open_hypervisor
from seawall.nbd_certs import CA_CERT
from seawall.nbd_certs import server_context as nbd_server_context
from seawall.tls import client_context, fingerprint
from seawall.wan.schedule import parse_schedule
from seawall.wan.site_throttle import SiteThrottle

log = logging.getLogger(__name__)


DRAIN_TIMEOUT_S = 5.0
"""How long a clean stop waits for the recovery site to take the groups' last records."""


class Agent:
    def __init__(self, config: SiteConfig) -> None:
        self.config = config
        self.agent_id = config.agent_id or config.site_id  # a joined agent has its own
        self._state_path = config.agent_dir / "state.json"
        self.state = AgentState.load(self._state_path)
        self.volumes: dict[str, ProtectedVolume] = {}
        self.hypervisor: Hypervisor | None = None  # opened at start (``--hypervisor``)
        self.protected: dict[str, tuple[ProtectedGroup, Shipper]] = {}
        self.splitters: dict[str, Splitter] = {}  # by group id: groups with sinks
        self.vm_watches: dict[str, VmWatch] = {}  # by group id: the same groups
        self.recovering: dict[str, RecoveryGroup] = {}
        self.exports = ExportRegistry()
        self.frontend = NbdFrontend(self, sink_count_path=config.run_dir / SINK_CONNECTIONS_FILE)
        self.failover_tests = FailoverTests(config, self.recovery_group,
                                            self.frontend.disconnect_export)
        self.live = LiveFailovers(config, self, self.failover_tests)
        self.recovered_vms = RecoveredVms(config, None)  # the tests' VMs; hypervisor at start
        self.source = SourceFailover(self)
        self.membership = Membership(self)
        self.identity = config.identity()
        self.quiescer = Quiescer(None, config.agent_dir / "frozen.json")  # --quiesce
        self._quiesce_task: asyncio.Task[None] | None = None  # --quiesce-every
        self.coordinated = CoordinatedGroups(lambda pem: client_context(self.identity, pem),
                                             self.quiescer)
        self.replication = ReplicationServer(self.recovering.get, self.identity)
        schedule = config.throttle_schedule
        self.throttle = SiteThrottle(config.throttle_bytes_per_s,
                                     parse_schedule(schedule) if schedule else None)

    # --- BackendCatalog for the NBD front end -------------------------------------------

    def backend(self, name: str) -> ExportBackend | None:
        if name in self.volumes:
            return self.volumes[name]
        record = self.exports.exports.get(name)
        if record is not None:
            return record.backend
        return self.failover_tests.backend(name) or self.live.backend(name)

    def names(self) -> list[str]:
        return [*self.volumes, *self.exports.exports, *self.failover_tests.names(),
                *self.live.names()]

    def disconnect_export(self, name: str) -> None:
        self.frontend.disconnect_export(name)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        # First: an unreachable hypervisor fails the start before anything else runs.
        self.hypervisor = await open_hypervisor(parse_hypervisor_spec(self.config.hypervisor))
        self.quiescer.hypervisor = self.hypervisor
        await self.quiescer.recover()  # guests an earlier run froze and could not thaw
        schedule = QuiesceSchedule(lambda: [group for group, _ in self.protected.values()],
                                   self.quiescer, self.coordinated)
        self._quiesce_task = asyncio.create_task(schedule.run())
        for spec in self.state.volumes:
            self.volumes[spec.name] = _open_volume(spec)
        for recovery in list(self.state.recovering):
            if recovery.live is not None and recovery.live.state == "consolidated":
                self.live.finish_consolidated(recovery)
                continue
            self.open_recovery(recovery)
            if recovery.live is not None:
                self.live.resume(self.recovering[recovery.group_id])
        self.recovered_vms.hypervisor = self.hypervisor
        await self.recovered_vms.clear_leftovers()  # an agent restart ends failover tests,
        self.failover_tests.clear_leftovers()  # their VMs first, then their images
        for protection in self.state.protected:
            self._start_protection(protection)
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        await self.frontend.start_unix(self.config.nbd_socket, self.config.socket_group)
        if self.config.nbd_tcp_host and self.config.nbd_tcp_port:
            self.config.ensure_nbd_tls()  # a site made before NBD had TLS
            tls = None if self.config.nbd_tcp_plain else nbd_server_context(
                self.config.nbd_tls_dir)
            await self.frontend.start_tcp(self.config.nbd_tcp_host, self.config.nbd_tcp_port,
                                          tls)
        await self.replication.start(self.config.replication_host, self.config.replication_port)
        log.info("agent up: %d volumes, %d protected, %d recovering groups",
                 len(self.volumes), len(self.protected), len(self.recovering))

    async def stop(self) -> None:
        if self._quiesce_task is not None:
            self._quiesce_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._quiesce_task
        # No more rounds, and held acknowledgements go, before the front end closes.
        await self.coordinated.close_all()
        for splitter in self.splitters.values():  # QEMU sees cancelled jobs, not lost sinks
            await splitter.stop(detach=True)
        for watch in self.vm_watches.values():
            await watch.stop()
        await self.recovered_vms.stop_all()  # before their disks' exports go
        # The front end first: a write taken after its group stopped capturing would be in
        # no stream and no saved plan, and the next start would trust that plan.
        await self.frontend.close()
        await asyncio.gather(*(group.drain(DRAIN_TIMEOUT_S)
                               for group, _ in self.protected.values()))
        await self.replication.close()
        for group, shipper in self.protected.values():
            await shipper.stop()
            await group.stop()
        for volume in self.volumes.values():
            volume.close()
        self.failover_tests.close_all()
        await self.live.release_all()
        for recovery in self.recovering.values():
            await recovery.stop()
            recovery.close()
        if self.hypervisor is not None:
            await self.hypervisor.close()

    def save_state(self) -> None:
        self.state.save(self._state_path)

    # --- volumes -----------------------------------------------------------------------

    def _new_saved_volume(self, name: str, path: Path | None, size_bytes: int,
                          owned: bool) -> SavedVolume:
        if name in self.volumes:
            raise Conflict(f"volume {name!r} already exists")
        try:
            return SavedVolume(name=name, path=path, size_bytes=size_bytes, owned=owned)
        except ValueError:
            raise InvalidInput(
                f"invalid volume name {name!r}: letters, digits, '.', '_' and '-' only"
            ) from None

    def create_volume(self, name: str, size_bytes: int) -> dict[str, Any]:
        path = self.config.volumes_dir / f"{name}.raw"
        spec = self._new_saved_volume(name, path, size_bytes, owned=True)
        warning = create_volume_file(path, size_bytes)
        description = self._register_volume(spec)
        return description if warning is None else {**description, "warning": warning}

    def add_volume(self, name: str, path: Path) -> dict[str, Any]:
        path = path.resolve()
        if not path.exists():
            raise NotFound(f"{path} does not exist")
        if any(v.path == path for v in self.state.volumes):
            raise Conflict(f"{path} is already a volume")
        spec = self._new_saved_volume(name, path, device_size_bytes(path), owned=False)
        return self._register_volume(spec)

    def create_sink(self, name: str, size_bytes: int, vm_uuid: str, disk: str) -> dict[str, Any]:
        """A capture sink for disk ``disk`` of VM ``vm_uuid`` (``SinkVolume``), served on the
        NBD socket by ``name``; one per VM disk."""
        if size_bytes <= 0 or size_bytes % 512:
            raise InvalidInput("a sink's size must be a positive multiple of 512 bytes")
        for other in self.state.volumes:
            if other.kind == "sink" and (other.vm_uuid, other.disk) == (vm_uuid, disk):
                raise Conflict(f"disk {disk} of VM {vm_uuid} already has sink {other.name}")
        spec = self._new_saved_volume(name, None, size_bytes, owned=True)
        return self._register_volume(spec.model_copy(
            update={"kind": "sink", "vm_uuid": vm_uuid, "disk": disk}))

    def _register_volume(self, spec: SavedVolume) -> dict[str, Any]:
        self.volumes[spec.name] = _open_volume(spec)
        self.state.volumes.append(spec)
        self.save_state()
        return self.describe_volume(spec.name)

    def describe_volume(self, name: str) -> dict[str, Any]:
        volume = self.volumes.get(name)
        if volume is None:
            raise NotFound(f"no volume named {name!r}")
        group = next((g.spec.name for g, _ in self.protected.values()
                      if any(v.name == name for v in g.spec.volumes)), None)
        description = {
            "name": name,
            "size": volume.size_bytes,
            "path": str(volume.path) if isinstance(volume, FileVolume) else "",
            "nbd_uri": f"nbd+unix:///{name}?socket={self.config.nbd_socket}",
            "group": group,
        }
        if isinstance(volume, SinkVolume):
            description.update(kind="sink", vm_uuid=volume.vm_uuid, disk=volume.disk)
        description.update(self.nbd_tcp_description(name))
        return description

    def nbd_tcp_description(self, export: str) -> dict[str, str]:
        """How a client reaches ``export`` on the NBD TCP listener, if there is one: its URI
        and, with TLS, the CA it trusts and how to get a client certificate."""
        uri = self.config.nbd_tcp_uri(export)
        if uri is None:
            return {}
        if self.config.nbd_tcp_plain:
            return {"nbd_tcp_uri": uri}
        return {"nbd_tcp_uri": uri,
                "nbd_tls_ca": str(self.config.nbd_tls_dir / CA_CERT),
                "nbd_client_cert": ("seawall volume client-cert CONSUMER --out DIR --data "
                                    f"{self.config.data_dir} (on the agent's host)")}

    def list_volumes(self) -> list[dict[str, Any]]:
        return [self.describe_volume(name) for name in self.volumes]

    # --- protection (protected side) ---------------------------------------------------

    def protect(self, spec: ProtectionSpec) -> dict[str, Any]:
        if spec.group_id in self.protected:
            raise Conflict(f"group {spec.name} is already protected here")
        for volume in spec.volumes:
            current = self.describe_volume(volume.name)
            if current["group"] is not None:
                raise Conflict(f"volume {volume.name} is already in group {current['group']}")
        self.state.protected.append(spec)
        self.save_state()
        self._start_protection(spec)
        return self.group_status(spec.group_id)

    def _start_protection(self, spec: ProtectionSpec) -> None:
        volumes = [self.volumes[v.name] for v in spec.volumes]
        share = self.config.buffer_bytes // max(1, len(self.state.protected))
        group = ProtectedGroup(spec, volumes, self.config.agent_dir / "groups" / spec.group_id,
                               buffer_limit_bytes=share, bitmap_bytes=self.config.bitmap_bytes)
        for other, _ in self.protected.values():
            other.buffer_limit_bytes = share
        pinned = spec.target_cert_pem
        shipper = Shipper(group, self.config.site_id, self.throttle,
                          client_context(self.identity, pinned) if pinned else None)
        if group.mirrors.sinks and self.hypervisor is not None:
            splitter = Splitter(group, self.hypervisor, self.config.nbd_socket)
            splitter.start()
            self.splitters[spec.group_id] = splitter
            watch = VmWatch(group, self.hypervisor, self.config.vm_config_check_s)
            watch.start()
            self.vm_watches[spec.group_id] = watch
        group.start()
        shipper.start()
        self.protected[spec.group_id] = (group, shipper)
        self.coordinated.add(group)
        if spec.fenced:
            self.source.set_read_only(group, True)

    def update_protection(self, group_id: str, change: ProtectionChange) -> dict[str, Any]:
        """Change a protected group's settings in place (saved first, as every change)."""
        group, shipper = self.protected.get(group_id) or (None, None)
        if group is None or shipper is None:
            raise NotFound(f"group {group_id} is not protected by this agent")
        for name, value in change.model_dump(exclude_unset=True, exclude_none=True).items():
            setattr(group.spec, name, value)
        self.save_state()
        group.reconfigure()
        shipper.reconfigure()
        return self.group_status(group_id)

    def update_retention(self, group_id: str, change: RetentionChange) -> dict[str, Any]:
        group = self.recovery_group(group_id)
        group.set_retention(change.history_s, change.journal_max_bytes,
                            change.journal_warning_ratio)
        self.save_state()
        return group.status()

    def resync(self, group_id: str) -> dict[str, Any]:
        group = self.protected_group(group_id)
        group.resync()
        return group.status()

    def protected_group(self, group_id: str) -> ProtectedGroup:
        entry = self.protected.get(group_id)
        if entry is None:
            raise NotFound(f"group {group_id} is not protected by this agent")
        return entry[0]

    def protection(self, group_id: str) -> tuple[ProtectedGroup, Shipper] | None:
        return self.protected.get(group_id)

    def protection_to_recovery(self, spec: RecoverySpec) -> dict[str, Any]:
        """A reversed group (``SourceFailover.reverse``): its protection, stopped, and its
        volumes go; they become the replicas of the recovery group ``spec``; one state
        save switches over."""
        group, _ = self.protected.pop(spec.group_id)
        self.splitters.pop(spec.group_id, None)  # a reversal refuses groups with sinks
        names = {v.name for v in group.spec.volumes}
        for name in names:
            self.volumes.pop(name).close()
        self.state.protected = [p for p in self.state.protected if p.group_id != spec.group_id]
        self.state.volumes = [v for v in self.state.volumes if v.name not in names]
        self.open_recovery(spec)
        self.state.recovering.append(spec)
        self.save_state()
        shutil.rmtree(self.config.agent_dir / "groups" / spec.group_id, ignore_errors=True)
        return self.recovering[spec.group_id].status()

    # --- recovery side -----------------------------------------------------------------

    def recover(self, spec: RecoverySpec) -> dict[str, Any]:
        if spec.group_id in self.recovering:
            raise Conflict(f"group {spec.name} is already recovered here")
        if spec.storage_dir is not None and not inside_any(
                self.config.storage_allowed, str(spec.storage_dir), "storage location").is_dir():
            raise InvalidInput(f"storage location {spec.storage_dir} is not a directory at "
                               "the recovery site")
        self._check_preseed(spec)
        self.open_recovery(spec)  # first: a group that cannot open is not remembered
        self.state.recovering.append(spec)
        self.save_state()
        return self.recovering[spec.group_id].status()

    def _check_preseed(self, spec: RecoverySpec) -> None:
        """A pre-seeded replica must be a file of the volume's size that nothing else uses,
        inside a directory this site allows (it is written: it becomes the replica)."""
        sizes = {v.name: v.size_bytes for v in spec.volumes}
        taken = {v.path.resolve() for v in self.state.volumes if v.path is not None} | {
            path.resolve() for other in self.state.recovering
            for path in other.replica_paths.values()}
        for name, path in spec.replica_paths.items():
            if name not in sizes:
                raise InvalidInput(f"pre-seed for {name!r}, which is not in the group")
            inside_any(self.config.storage_allowed, str(path), f"pre-seed for {name!r}")
            if not path.is_absolute() or not path.is_file():
                raise InvalidInput(f"pre-seed {path} for {name!r} is not an existing file given "
                                   "by its absolute path at the recovery site")
            if path.stat().st_size != sizes[name]:
                raise InvalidInput(f"pre-seed {path} has {path.stat().st_size} bytes, volume "
                                   f"{name!r} has {sizes[name]}")
            if path.resolve() in taken:
                raise Conflict(f"pre-seed {path} is already in use by this site")

    def open_recovery(self, spec: RecoverySpec) -> None:
        group = RecoveryGroup(spec, self.group_dir(spec))
        if spec.live is None:  # a live failover stopped retention
            group.start()
        if spec.source_cert_pem is not None:
            self.replication.trust(spec.source_cert_pem)
        self.recovering[spec.group_id] = group

    def forget_pin(self, cert_pem: str) -> dict[str, Any]:
        """A site was unpaired: its certificate no longer passes the replication handshake.

        Refused while a group here still pins it (its manager refuses first, so this only
        catches a group the manager does not know of).
        """
        gone = fingerprint(cert_pem)
        users = sorted(
            [g.spec.name for g in self.recovering.values()
             if g.spec.source_cert_pem and fingerprint(g.spec.source_cert_pem) == gone]
            + [g.spec.name for g, _ in self.protected.values()
               if g.spec.target_cert_pem and fingerprint(g.spec.target_cert_pem) == gone])
        if users:
            raise Conflict(f"groups of this agent still use that site: {', '.join(users)}")
        pinned = [g.spec.source_cert_pem for g in self.recovering.values()
                  if g.spec.source_cert_pem]
        self.replication.trust_only(pinned)
        return {"pinned": len({fingerprint(pem) for pem in pinned})}

    def end_replication_session(self, group_id: str) -> None:
        self.replication.end_session(group_id)

    def close_recovery(self, group_id: str) -> None:
        """Close and forget a recovery group (its state entry stays until the next save)."""
        group = self.recovering.pop(group_id, None)
        if group is not None:
            group.close()

    def recovery_to_volumes(self, group_id: str, volumes: list[SavedVolume]) -> None:
        """A committed live failover: one state save drops the recovery group and adds its
        replicas as volumes, which are served from then on."""
        self.state.recovering = [s for s in self.state.recovering if s.group_id != group_id]
        self.state.volumes.extend(volumes)
        self.save_state()  # the commit point
        for spec in volumes:
            self.volumes[spec.name] = _open_volume(spec)

    def group_dir(self, spec: RecoverySpec) -> Path:
        """Where a recovered group's journal and replicas live."""
        return (spec.storage_dir or self.config.journals_dir) / spec.group_id

    def recovery_group(self, group_id: str) -> RecoveryGroup:
        group = self.recovering.get(group_id)
        if group is None:
            raise NotFound(f"group {group_id} is not recovered by this agent")
        return group

    # --- groups, either side -----------------------------------------------------------

    def group_status(self, group_id: str) -> dict[str, Any]:
        if group_id in self.protected:
            group, shipper = self.protected[group_id]
            watch = self.vm_watches.get(group_id)
            return {**group.status(), "wan": shipper.status(),
                    "coordination": self.coordinated.status(group_id),
                    "vm_alerts": watch.status() if watch else []}
        return self.recovery_group(group_id).status()

    def checkpoints(self, group_id: str, newest: int | None = None) -> list[dict[str, Any]]:
        if group_id in self.protected:
            listed = self.protected[group_id][0].checkpoint_list()
            return listed[-newest:] if newest else listed
        return self.recovery_group(group_id).checkpoint_list(newest)

    # --- exports -----------------------------------------------------------------------

    def create_export(self, group_id: str, volume: str, checkpoint: str) -> dict[str, Any]:
        record = self.exports.create(self.recovery_group(group_id), volume, checkpoint)
        return self._describe_export(record)

    def stop_export(self, name: str) -> dict[str, Any]:
        record = self.exports.remove(name)
        self.disconnect_export(name)
        return self._describe_export(record)

    def list_exports(self) -> list[dict[str, Any]]:
        return [self._describe_export(r) for r in self.exports.exports.values()]

    def _describe_export(self, record: ExportRecord) -> dict[str, Any]:
        return record.describe(str(self.config.nbd_socket))



def _open_volume(spec: SavedVolume) -> ProtectedVolume:
    if spec.kind == "sink":
        assert spec.vm_uuid is not None and spec.disk is not None
        return SinkVolume(spec.name, spec.size_bytes, spec.vm_uuid, spec.disk)
    assert spec.path is not None
    return FileVolume(spec.name, spec.path)
