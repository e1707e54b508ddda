"""The name a live failover gives a recovered VM (``RecoveredVms._live_name``), fed the
recovery host's answer about that name."""

from __future__ import annotations

import asyncio
from typing import Literal, cast

import pytest

from seawall.agent.failover.vm_boot import RecoveredVms
from seawall.errors import Conflict
from seawall.hypervisor.libvirt_boot import LibvirtBoot

State = Literal["running", "shut off"] | None


class Host:
    def __init__(self, state: State) -> None:
        self._state = state

    async def state(self, name: str) -> State:
        return self._state


def live_name(state: State) -> tuple[str, list[str]]:
    notes: list[str] = []
    name = asyncio.run(RecoveredVms._live_name(cast(LibvirtBoot, Host(state)), "web", "app",
                                               notes))
    return name, notes


def test_a_free_name_is_the_production_name() -> None:
    assert live_name(None) == ("web", [])


def test_beside_a_shut_off_definition_the_vm_is_named_after_its_group() -> None:
    name, [note] = live_name("shut off")
    assert name == "web-app" and "shut-off domain named web" in note


def test_a_running_domain_of_that_name_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="runs on the recovery host: the source may be up"):
        live_name("running")
