"""The monitor: a thread of the site manager that evaluates alerts every few seconds.

Each round (``tick``): probe the site's agent and every peer manager, make every group's
status document, evaluate the policy, and bring the alerts table in line (``AlertStore``).
Alerts thus raise and clear by themselves, a round after the condition starts or ends.

Rules:
- The round period is ``SEAWALL_MONITOR_INTERVAL_S`` (seconds, default 5; tests use less),
  read once when the manager starts.
- A failing round is logged and the next one runs as usual: the monitor never stops on an
  error, and it never blocks a request (it has its own thread and clients). A database
  out of space does not fail a round: the store keeps the alerts in memory meanwhile.
- Once a day cleared alerts older than ``CLEARED_RETENTION`` are deleted.
- ``stop`` ends the thread after the round under way (manager shutdown).
- ``followers`` get each round's status documents once its alerts are stored (disks
  hot-plugged into protected VMs join their group: ``seawall.manager.vms.hotplug``); one
  that fails is logged, the others still run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from seawall.errors import InvalidInput
from seawall.manager.monitoring.alerts import AlertStore
from seawall.manager.monitoring.policy import Evaluation, evaluate
from seawall.manager.monitoring.service import StatusService

log = logging.getLogger(__name__)

INTERVAL_ENV = "SEAWALL_MONITOR_INTERVAL_S"
DEFAULT_INTERVAL_S = 5.0
INTERVAL_RANGE_S = (0.1, 3600.0)
CLEARED_RETENTION = timedelta(days=90)
PRUNE_PERIOD_S = 86400.0


def interval_from_env() -> float:
    text = os.environ.get(INTERVAL_ENV)
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        interval_s = float(text)
    except ValueError:
        raise InvalidInput(f"{INTERVAL_ENV} must be a number of seconds, not {text!r}") from None
    low, high = INTERVAL_RANGE_S
    if not low <= interval_s <= high:
        raise InvalidInput(f"{INTERVAL_ENV} must be between {low} and {high} s, not {text}")
    return interval_s


class Monitor:
    def __init__(self, status: StatusService, alerts: AlertStore, interval_s: float) -> None:
        self.status = status
        self.alerts = alerts
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned_s: float | None = None  # monotonic time of the last prune
        self.followers: list[Callable[[list[dict[str, Any]]], None]] = []

    def tick(self) -> Evaluation:
        """One round: probe, evaluate, store; the evaluation (for tests and logs)."""
        agent_error = self.status.probe_agent()
        joined_errors = self.status.probe_joined_agents()
        peer_errors = self.status.probe_peers()
        documents = self.status.documents(agent_ok=agent_error is None)
        now = datetime.now(UTC)
        evaluation = evaluate(documents, agent_error, peer_errors, now, joined_errors,
                              self.status.probe_database())
        raised, cleared = self.alerts.apply(evaluation, now)
        for key in raised:
            alert = evaluation.alerts[key]
            log.warning("alert raised (%s): %s", alert.severity.value, alert.message)
        for key in cleared:
            log.info("alert cleared: %s", key)
        if self._pruned_s is None or time.monotonic() - self._pruned_s >= PRUNE_PERIOD_S:
            self._pruned_s = time.monotonic()
            self.alerts.prune(now - CLEARED_RETENTION)
        for follow in self.followers:
            try:
                follow(documents)
            except Exception:  # a bug there must not stop the alerts
                log.exception("monitor follower failed")
        return evaluation

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.status.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # a bad round (database busy, a bug) must not end monitoring
                log.exception("monitor round failed")
            self._stopping.wait(self.interval_s)
