"""The site manager's metrics: the site's view, from its database and its agent, on scrape.

Rules:
- A custom collector, run when Prometheus scrapes ``/metrics``: the groups come from the
  database (``GroupService.list_all``, which names each group's peer site), the live facts
  from the agent's snapshot (``GET /metrics/snapshot`` on its control socket), turned into
  families by ``seawall.observability.metrics`` as the agent's own ``/metrics`` does, with
  a ``peer`` label added. Nothing is cached or polled between scrapes.
- An agent that does not answer within ``AGENT_TIMEOUT_S`` makes ``seawall_agent_up`` 0;
  the groups still show in ``seawall_group_info``, and the scrape succeeds.
- Process basics (CPU, memory, open files, GC) are the manager process's own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from seawall.config import SiteConfig
from seawall.errors import SeawallError
from seawall.http import JsonClient
from seawall.manager.groups.service import GroupService
from seawall.observability.metrics import KnownGroup, site_families, site_info

log = logging.getLogger(__name__)

AGENT_TIMEOUT_S = 5.0
"""How long a scrape waits for the agent (Prometheus's own scrape timeout is 10 s)."""


class MetricsService:
    def __init__(self, config: SiteConfig, groups: GroupService, agent: JsonClient) -> None:
        """``agent``: a client of the site's agent with a short timeout (``AGENT_TIMEOUT_S``)."""
        self.config = config
        self.groups = groups
        self.agent = agent
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, self):
            self.registry.register(collector)

    def exposition(self) -> bytes:
        """The text exposition format of every metric (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterable[Metric]:
        yield site_info(self.config.name, self.config.site_id, "manager")
        known = [KnownGroup(g["group_id"], g["name"], g["role"], g["peer"])
                 for g in self.groups.list_all()]
        try:
            snapshot = self.agent.get("/metrics/snapshot")
        except SeawallError as exc:
            log.debug("metrics: no snapshot from the agent: %s", exc.message)
            snapshot = None
        up = GaugeMetricFamily("seawall_agent_up",
                               "1 if the site's agent answered this scrape, else 0.")
        up.add_metric([], 0.0 if snapshot is None else 1.0)
        yield up
        yield from site_families(snapshot, known)
