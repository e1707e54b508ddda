"""Wiring of the site manager: the one place that builds services and the FastAPI app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from seawall import __version__
from seawall.config import SiteConfig
from seawall.http import install_error_handler
from seawall.manager.clients import agent_client
from seawall.manager.exports.routes import router as exports_router
from seawall.manager.exports.service import ExportService
from seawall.manager.groups.routes import router as groups_router
from seawall.manager.groups.service import GroupService
from seawall.manager.models import create_database
from seawall.manager.sites.routes import router as sites_router
from seawall.manager.sites.service import SiteService
from seawall.manager.volumes.routes import router as volumes_router
from seawall.manager.volumes.service import VolumeService


def create_app(config: SiteConfig) -> FastAPI:
    app = FastAPI(title=f"Seawall site manager ({config.name})", version=__version__)
    install_error_handler(app)
    _engine, sessions = create_database(config.database_url)
    agent = agent_client(config)
    sites = SiteService(config, sessions)
    groups = GroupService(config, sessions, agent, sites)
    app.state.sites = sites
    app.state.volumes = VolumeService(agent)
    app.state.groups = groups
    app.state.exports = ExportService(agent, groups)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "site": config.name, "version": __version__}

    for router in (sites_router, volumes_router, groups_router, exports_router):
        app.include_router(router)
    return app
