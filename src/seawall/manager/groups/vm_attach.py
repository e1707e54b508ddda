"""Waiting for the mirrors of the VM disks a command adds: nothing half-attached.

``group create --vm``, ``group update --add-vm`` (and a disk hot-plugged into a protected
VM, which takes the same path) return once every new disk's mirror job has *started* at
its agent — attached; its full copy, the disk's initial sync, may take hours — or one of
them failed. On a failure the caller undoes the whole command (a create: the group
removed at both sites, as ``group delete`` does; an update: every stream put back as it
was at both sites, which detaches the mirrors it attached), removes the sinks it made,
and raises the error this module builds.

Rules:
- ``outcome`` is the pure core: the agents' ``mirrors`` (volume -> ``attaching``,
  ``copying``, ``mirroring``, ``comparing`` or ``ended: why``) and ``mirror_refusals``
  (volume -> the error code of an attach that failed) say whether some new sink is still
  ``attaching``, all ``started``, or, once none is attaching, which failed first (so the
  undo never races an attach under way).
- The error is of the class the agent's adapter chose for the hypervisor's refusal
  (``errors.error_from_code``: the one mapping; ``Conflict`` for a disk busy with another
  block job, ``InvalidInput`` for one QEMU refuses, ``Unavailable`` for a hypervisor that
  does not answer); a mirror that started and ended at once is ``Unavailable``. The
  message names the VM, the disk and the reason.
- A mirror that has not started within ``START_TIMEOUT_S`` counts as failed
  (``Unavailable``, with the group's last error): the command never hangs.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from seawall.contract.agent_api import AgentApi
from seawall.errors import SeawallError, Unavailable, error_from_code
from seawall.http import JsonClient

START_TIMEOUT_S = 60.0
POLL_S = 0.2


Outcome = Literal["attaching", "started"] | tuple[str, str, str]


def outcome(sinks: list[str], mirrors: dict[str, str], refusals: dict[str, str]) -> Outcome:
    """``attaching`` while a sink of ``sinks`` is; ``started`` once every one did; else
    the first that failed: (volume, error code, reason)."""
    if any(mirrors.get(volume, "attaching") == "attaching" for volume in sinks):
        return "attaching"
    for volume in sinks:
        state = mirrors.get(volume, "attaching")
        if state.startswith("ended: "):
            return volume, refusals.get(volume, Unavailable.code), state.removeprefix("ended: ")
    return "started"


def wait_started(streams: list[tuple[JsonClient, str]], sinks: list[str],
                 labels: dict[str, str], timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the mirrors of ``sinks`` (in the group's ``streams``) started; the error of
    the first that did not. ``labels``: volume -> "VM web, disk vda" for messages."""
    if not sinks:
        return
    deadline_s = time.monotonic() + timeout_s
    while True:
        mirrors: dict[str, str] = {}
        refusals: dict[str, str] = {}
        last_errors: list[str] = []
        for client, stream in streams:
            status: dict[str, Any] = AgentApi(client).group_status(stream).model_dump()
            mirrors.update(status.get("mirrors") or {})
            refusals.update(status.get("mirror_refusals") or {})
            if status.get("last_error"):
                last_errors.append(str(status["last_error"]))
        found = outcome(sinks, mirrors, refusals)
        if found == "started":
            return
        if isinstance(found, tuple):
            volume, code, reason = found
            raise error_from_code(code, f"{labels.get(volume, volume)}: the mirror was not "
                                        f"attached: {reason}")
        if time.monotonic() > deadline_s:
            late = [volume for volume in sinks if mirrors.get(volume, "attaching") == "attaching"]
            raise Unavailable(f"{labels.get(late[0], late[0])}: the mirror did not start "
                              f"within {timeout_s:g} s"
                              + (f" ({'; '.join(last_errors)})" if last_errors else ""))
        time.sleep(POLL_S)


def undone(exc: SeawallError, what: str) -> SeawallError:
    """``exc`` (same class) saying what was undone because of it."""
    return type(exc)(f"{exc.message}; {what}")
