"""The agent's metrics: a snapshot of its live objects, and where Prometheus reads it.

Rules and invariants:
- Collected on scrape, never pushed: ``snapshot`` reads what the data path keeps anyway
  (each group's status, the per-volume write counters of ``ProtectedGroup.writes``). The
  routes are ``async def``, so it runs in the agent's event loop between NBD requests and
  sees no change half done, without a lock. Turning it into text happens in a worker
  thread, from the snapshot alone.
- Prometheus reads ``GET /metrics`` on the optional TCP listener (``--metrics HOST:PORT``
  at ``site init`` or ``agent run``; off by default). It has no authentication and shows
  group and volume names: bind it to localhost or a management network. The same
  exposition is on the control socket, where the site manager reads the snapshot itself
  (``GET /metrics/snapshot``) to build its own ``/metrics``.
- The families are made in ``seawall.observability.metrics`` (pure); process basics
  (CPU, memory, open files, GC) come from prometheus_client's collectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import Metric

from seawall.config import SiteConfig
from seawall.observability.metrics import site_families, site_info

if TYPE_CHECKING:
    from seawall.agent.service import Agent


def snapshot(agent: Agent) -> dict[str, Any]:
    """The agent's facts as plain data: what ``site_families`` turns into metrics."""
    groups = []
    for group, shipper in agent.protected.values():
        volumes = [{"name": volume.name, "size_bytes": volume.size_bytes,
                    "written_bytes": counter.written_bytes, "write_count": counter.write_count}
                   for volume, counter in zip(group.volumes, group.writes, strict=True)]
        groups.append({**group.status(), "wan": shipper.status(), "volumes": volumes})
    for recovery in agent.recovering.values():
        volumes = [{"name": v.name, "size_bytes": v.size_bytes} for v in recovery.spec.volumes]
        groups.append({**recovery.status(), "volumes": volumes})
    config = agent.config
    return {
        "agent": {
            "site": config.name,
            "site_id": config.site_id,
            "buffer_bytes": config.buffer_bytes,
            "throttle_bytes_per_s": agent.throttle.rate_bytes_per_s,
            "volumes": len(agent.volumes),
            "exports": len(agent.exports.exports),
        },
        "groups": groups,
    }


class AgentMetrics:
    """Scrapes of the agent: the snapshot on the event loop, the rest in a worker thread."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def exposition(self) -> Response:
        facts = snapshot(self.agent)  # on the loop, between NBD requests: consistent
        # Making and formatting the families is the cost (~1 ms per group here): off the
        # loop, so that a scrape does not delay the volumes' requests.
        body = await asyncio.to_thread(self._render, facts)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def _render(self, facts: dict[str, Any]) -> bytes:
        registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR,
                          _Facts(self.agent.config, facts)):
            registry.register(collector)
        return generate_latest(registry)

    def router(self, with_snapshot: bool) -> APIRouter:
        """``/metrics`` (text exposition), and ``/metrics/snapshot`` (JSON) if asked."""
        router = APIRouter()

        @router.get("/metrics")
        async def metrics() -> Response:
            return await self.exposition()

        if with_snapshot:
            @router.get("/metrics/snapshot")
            async def metrics_snapshot() -> dict[str, Any]:
                return snapshot(self.agent)

        return router

    def listener_app(self) -> FastAPI:
        """The app of the TCP listener: ``/metrics`` only, nothing of the control API."""
        app = FastAPI(title="Seawall agent metrics", docs_url=None, redoc_url=None,
                      openapi_url=None)
        app.include_router(self.router(with_snapshot=False))
        return app


class _Facts:
    """A collector of one snapshot."""

    def __init__(self, config: SiteConfig, facts: dict[str, Any]) -> None:
        self.config = config
        self.facts = facts

    def collect(self) -> Iterable[Metric]:
        yield site_info(self.config.name, self.config.site_id, "agent")
        yield from site_families(self.facts)
