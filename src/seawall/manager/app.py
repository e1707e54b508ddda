"""Wiring of the site manager: the one place that builds services and the FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from seawall import __version__
from seawall.config import SiteConfig
from seawall.errors import SeawallError
from seawall.http import install_error_handler
from seawall.manager.clients import agent_client
from seawall.manager.exports.routes import router as exports_router
from seawall.manager.exports.service import ExportService
from seawall.manager.groups.routes import router as groups_router
from seawall.manager.groups.service import GroupService
from seawall.manager.models import create_database
from seawall.manager.recovery.clones import CloneService
from seawall.manager.recovery.failover import FailoverTestService
from seawall.manager.recovery.reports import ReportStore
from seawall.manager.recovery.routes import router as recovery_router
from seawall.manager.recovery.store import OperationStore
from seawall.manager.sites.routes import router as sites_router
from seawall.manager.sites.service import SiteService
from seawall.manager.volumes.routes import router as volumes_router
from seawall.manager.volumes.service import VolumeService

log = logging.getLogger(__name__)


def create_app(config: SiteConfig) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(_reconcile_recovery, failover_tests, clones)
        yield

    app = FastAPI(title=f"Seawall site manager ({config.name})", version=__version__,
                  lifespan=lifespan)
    install_error_handler(app)
    _engine, sessions = create_database(config.database_url)
    agent = agent_client(config)
    sites = SiteService(config, sessions)
    groups = GroupService(config, sessions, agent, sites)
    app.state.sites = sites
    app.state.volumes = VolumeService(agent)
    app.state.groups = groups
    app.state.exports = ExportService(agent, groups)
    operations, reports = OperationStore(sessions), ReportStore(config.reports_dir)
    failover_tests = FailoverTestService(config, operations, reports, agent, groups)
    clones = CloneService(config, operations, reports, agent, groups)
    app.state.failover_tests, app.state.clones, app.state.reports = failover_tests, clones, reports

    @app.get("/health", tags=["health"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "site": config.name, "version": __version__}

    for router in (sites_router, volumes_router, groups_router, exports_router, recovery_router):
        app.include_router(router)
    return app


def _reconcile_recovery(*services: FailoverTestService | CloneService) -> None:
    """Resume or roll back the recovery operations an earlier manager process left active."""
    for service in services:
        try:
            service.reconcile()
        except SeawallError as exc:  # e.g. no agent yet: every recovery request retries it
            log.warning("recovery operations not reconciled at start: %s", exc.message)
