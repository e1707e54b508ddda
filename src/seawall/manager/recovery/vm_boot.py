"""Booting a failover's VMs in the group's boot order: the recovery manager's part (a
failover test's, or a live failover's and a move's: ``live``).

The agent defines and starts one VM per request and reports how each runs
(``seawall.agent.failover.vm_boot``); the order, the delays and what "ready" means are
decided here, once.

Rules:
- Order (``boot_plan``, pure): the VMs the boot order names, in its order and with its
  delays, then every other VM of the checkpoint by name with no delay. A step naming a
  volume rather than a VM is skipped (volumes boot nothing).
- A VM is ready when its qemu-guest-agent answers (if its definition has the agent's
  channel), or else once it runs; then its delay passes before the next VM starts. A VM
  whose guest agent does not answer within ``ready_timeout_s`` is reported ``started``
  (it runs, readiness unknown) and the order goes on; one that cannot be defined or stops
  is ``failed`` with the reason, and the order goes on: one VM does not hold back the
  others.
- Each VM's entry says when it was started and became ready, in seconds from the test's
  request (the report's boot timeline); ``vms_ready_s`` is the time every VM was ready,
  None if one was not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from seawall.contract.agent_api import AgentApi
from seawall.contract.recovered_vms import VmBoot
from seawall.errors import InvalidInput, NotFound, SeawallError

READY_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 0.5


def boot_plan(vms: list[str], boot_order: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(VM, delay after it) in the order they start (see the rules)."""
    present = set(vms)
    ordered = [(step["name"], float(step.get("delay_s", 0.0))) for step in boot_order
               if step["name"] in present]
    named = {name for name, _ in ordered}
    return ordered + [(vm, 0.0) for vm in sorted(present - named)]


def check_networks(agent: AgentApi, network_map: dict[str, str], default: str | None) -> None:
    """Every network a failover would put VMs on exists at the recovery host. Asked only
    when one is named; a group's default network at a host without libvirt is not an
    error (a group of volumes boots nothing), a ``--network-map`` there is."""
    wanted = {*network_map.values(), *([default] if default else [])}
    if not wanted:
        return
    try:
        networks = agent.recovery_networks().networks
    except InvalidInput:
        if network_map:
            raise
        return
    missing = sorted(wanted - set(networks))
    if missing:
        raise NotFound(f"network {', '.join(missing)} does not exist at the recovery "
                       "host (`virsh net-list --all` there); nothing was started")


def vm_problems(vms: list[dict[str, Any]]) -> list[str]:
    """What went wrong with the booted VMs, one warning each, for the operation's error."""
    return [f"VM {vm['vm']}: {vm['error']}" for vm in vms if "error" in vm]


class VmBooter:
    def __init__(self, agent: AgentApi, on_step: Callable[[str], None], live: bool = False,
                 ready_timeout_s: float = READY_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.agent = agent
        self.on_step = on_step
        self._boot_vm = agent.boot_live_vm if live else agent.boot_test_vm
        self._vms = agent.live_vms if live else agent.test_vms
        self.ready_timeout_s = ready_timeout_s
        self.clock = clock
        self.sleep = sleep

    def boot(self, operation_id: str, plan: list[tuple[str, float]], network: str | None,
             network_map: dict[str, str],
             started_s: float) -> tuple[list[dict[str, Any]], float | None]:
        """Boot ``plan``; each VM's entry, and when all were ready (None: not all)."""
        entries = []
        for vm, delay_s in plan:
            entry: dict[str, Any] = {"vm": vm, "delay_s": delay_s}
            entries.append(entry)
            try:
                booted = self._boot_vm(operation_id, VmBoot(
                    vm=vm, network=network, network_map=network_map))
            except SeawallError as exc:
                entry.update(state="failed", error=exc.message)
                self.on_step(f"VM {vm} failed")
                continue
            entry.update(booted.model_dump(exclude_none=True),
                         started_s=round(self.clock() - started_s, 3))
            self.on_step(f"VM {vm} started")
            entry.update(self._wait_ready(operation_id, booted.domain))
            if entry["state"] == "ready":
                entry["ready_s"] = round(self.clock() - started_s, 3)
                self.on_step(f"VM {vm} ready")
            if delay_s:
                self.sleep(delay_s)
        ready = all(entry.get("state") == "ready" for entry in entries)
        return entries, (round(self.clock() - started_s, 3) if ready else None)

    def _wait_ready(self, operation_id: str, domain: str) -> dict[str, Any]:
        deadline_s = self.clock() + self.ready_timeout_s
        while True:
            try:
                states = {v.domain: v for v in self._vms(operation_id)}
            except SeawallError as exc:
                return {"state": "failed", "error": f"its state cannot be read: {exc.message}"}
            vm = states.get(domain)
            if vm is None or not vm.running:
                return {"state": "failed", "error": "it stopped (see its console log)"}
            if vm.guest_agent or not vm.has_guest_agent:
                return {"state": "ready"}
            if self.clock() >= deadline_s:
                return {"state": "started",
                        "error": f"its guest agent did not answer within "
                                 f"{self.ready_timeout_s:g} s"}
            self.sleep(POLL_INTERVAL_S)
