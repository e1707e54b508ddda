"""A group's pre- and post-recovery scripts, run by the recovery site's agent for a failover.

Rules:
- The scripts live at the recovery site's host, where its agent runs them
  (``POST /scripts/run``, ``seawall.agent.control.scripts``); the manager waits for the answer,
  with an HTTP timeout of the script's own plus a margin.
- The script learns the operation from its environment: ``SEAWALL_GROUP``,
  ``SEAWALL_OPERATION`` (its id), ``SEAWALL_KIND`` (failover-test, failover-live, move),
  ``SEAWALL_CHECKPOINT`` (the checkpoint's id; ``final`` before a shut-down source's final
  checkpoint is taken), ``SEAWALL_STAGE`` (pre, post) and, for post, ``SEAWALL_IMAGES``
  (JSON: volume -> NBD URI).
- Pre runs before anything is made (before the source is fenced): a failure — exit code
  not 0, timeout, cannot start, agent unreachable — raises ``PeerError`` (the fault is at
  the recovery host) and the operation fails with nothing to undo. Post runs once every
  image is readable: a failure is a warning (returned, for the operation's ``error``);
  the images stay.
- Each run's outcome goes into the operation's details (``scripts: {pre, post}``) with one
  step (``pre-recovery script succeeded`` or ``... failed: WHY``), whatever it was; a
  stage with no script configured records nothing.
"""

from __future__ import annotations

import json
from typing import Any

from seawall.config import SiteConfig
from seawall.contract.agent import ScriptOutcome, ScriptRun
from seawall.contract.agent_api import AgentApi
from seawall.errors import PeerError, SeawallError
from seawall.manager.clients import agent_client
from seawall.manager.groups.settings import options_of
from seawall.manager.models import Group
from seawall.manager.recovery.store import OperationStore

HTTP_MARGIN_S = 30.0
"""Beyond the script's timeout: the agent's kill, output and answer."""


class RecoveryScripts:
    def __init__(self, config: SiteConfig, store: OperationStore) -> None:
        self.config = config
        self.store = store

    def pre(self, operation_id: str, kind: str, group: Group, checkpoint: str) -> None:
        """Run the group's pre script, if any; ``PeerError`` unless it succeeded."""
        outcome = self._run(operation_id, kind, group, "pre", checkpoint, {})
        if outcome is not None and outcome["error"] is not None:
            raise PeerError(
                f"the pre-recovery script {outcome['path']} failed ({outcome['error']}); "
                f"nothing was made. Its output ends: {_last_line(outcome['output'])}")

    def post(self, operation_id: str, kind: str, group: Group, checkpoint: str,
             images: list[dict[str, Any]]) -> str | None:
        """Run the group's post script, if any; a warning to record if it failed."""
        uris = {image["volume"]: image["uri"] for image in images}
        outcome = self._run(operation_id, kind, group, "post", checkpoint,
                            {"SEAWALL_IMAGES": json.dumps(uris, sort_keys=True)})
        if outcome is None or outcome["error"] is None:
            return None
        return (f"warning: the post-recovery script {outcome['path']} failed "
                f"({outcome['error']}); the images are kept")

    def _run(self, operation_id: str, kind: str, group: Group, stage: str, checkpoint: str,
             extra: dict[str, str]) -> dict[str, Any] | None:
        options = options_of(group)
        path = options.pre_script if stage == "pre" else options.post_script
        if path is None:
            return None
        environment = {"SEAWALL_GROUP": group.name, "SEAWALL_OPERATION": operation_id,
                       "SEAWALL_KIND": kind, "SEAWALL_CHECKPOINT": checkpoint,
                       "SEAWALL_STAGE": stage, **extra}
        timeout_s = options.script_timeout_s
        client = agent_client(self.config, timeout_s=timeout_s + HTTP_MARGIN_S)
        try:
            outcome = AgentApi(client).run_script(ScriptRun(
                path=path, environment=environment, timeout_s=timeout_s)).model_dump()
        except SeawallError as exc:
            outcome = ScriptOutcome(path=path, error=exc.message).model_dump()
        finally:
            client.close()
        scripts = {**self.store.get(operation_id).details.get("scripts", {}), stage: outcome}
        result = "succeeded" if outcome["error"] is None else f"failed: {outcome['error']}"
        self.store.update(operation_id, step=f"{stage}-recovery script {result}",
                          scripts=scripts)
        return outcome


def _last_line(output: str) -> str:
    lines = output.strip().splitlines()
    return lines[-1][-200:] if lines else "(nothing)"
