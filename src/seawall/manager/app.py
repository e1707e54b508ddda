"""Wiring of the site manager: the one place that builds services and the FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from seawall import __version__
from seawall.api_tls import ApiTls
from seawall.body_limit import JSON_BODY_LIMIT_BYTES, BodyLimit
from seawall.config import SiteConfig
from seawall.errors import DatabaseFull, SeawallError
from seawall.http import install_error_handler
from seawall.manager.access.guard import authorize
from seawall.manager.access.login_gate import LoginGate
from seawall.manager.access.routes import router as access_router
from seawall.manager.access.service import AccessService
from seawall.manager.agents.directory import AgentDirectory
from seawall.manager.agents.routes import router as agents_router
from seawall.manager.clients import agent_client
from seawall.manager.console.app import mount as mount_console
from seawall.manager.exports.routes import router as exports_router
from seawall.manager.exports.service import ExportService
from seawall.manager.files.routes import router as files_router
from seawall.manager.files.service import FileService
from seawall.manager.groups.membership import GroupMembership
from seawall.manager.groups.membership_routes import router as group_members_router
from seawall.manager.groups.reverse import ReverseProtection
from seawall.manager.groups.routes import router as groups_router
from seawall.manager.groups.service import GroupService
from seawall.manager.groups.settings_routes import router as group_settings_router
from seawall.manager.groups.spanning import SpanningGroups
from seawall.manager.groups.updates import SettingsUpdates
from seawall.manager.groups.vm_groups import VmGroups
from seawall.manager.metrics import service as metrics_service
from seawall.manager.metrics.routes import router as metrics_router
from seawall.manager.models import create_database, is_out_of_space
from seawall.manager.monitoring.wiring import install_monitoring
from seawall.manager.recovery.clones import CloneService
from seawall.manager.recovery.failover import FailoverTestService
from seawall.manager.recovery.live import CommitPolicyTimer, FailoverLiveService
from seawall.manager.recovery.operations import OperationRunner
from seawall.manager.recovery.reports import ReportStore
from seawall.manager.recovery.routes import router as recovery_router
from seawall.manager.recovery.store import OperationStore
from seawall.manager.sites.routes import router as sites_router
from seawall.manager.sites.service import SiteService
from seawall.manager.sites.unpairing import Unpairing
from seawall.manager.vms.configs import VmConfigs
from seawall.manager.vms.hotplug import HotPlugs
from seawall.manager.vms.routes import router as vms_router
from seawall.manager.vms.service import VmService
from seawall.manager.vms.sinks import VmSinks
from seawall.manager.volumes.routes import router as volumes_router
from seawall.manager.volumes.service import VolumeService

log = logging.getLogger(__name__)

LOGIN_BODY_LIMIT_BYTES = 16 << 10  # a name, a password of at most 1024 characters, a label


def create_app(config: SiteConfig) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(_reconcile_recovery, failover_tests, clones, live)
        monitor.start()
        policies.start()
        yield
        await asyncio.to_thread(policies.stop)
        await asyncio.to_thread(monitor.stop)
        app.state.login.close()

    # Every route passes the access guard; its policy table refuses routes it does not list.
    app = FastAPI(title=f"Seawall site manager ({config.name})", version=__version__,
                  lifespan=lifespan, dependencies=[Depends(authorize)])
    install_error_handler(app)
    _answer_database_full(app)
    # Inside the event log's middleware (added later, so outside): a refusal is recorded.
    app.add_middleware(BodyLimit, limit_for=body_limit_bytes)
    _engine, sessions = create_database(config.database_url)
    agent = agent_client(config)
    app.state.access = AccessService(sessions)
    app.state.login = LoginGate(app.state.access)
    if not app.state.access.list_users():
        log.warning("site %s has no users, so no one can use its API: "
                    "`seawall site admin-token --data %s` makes an admin token",
                    config.name, config.data_dir)
    app.state.api_tls = None if config.insecure_http else ApiTls(*config.api_tls_files())
    sites = SiteService(config, sessions, app.state.api_tls)
    agents = AgentDirectory(config, sessions, agent, api_tls=app.state.api_tls)
    app.state.agents, app.state.volumes = agents, VolumeService(agents)
    app.state.vms = VmService(agents, app.state.volumes)
    groups = GroupService(config, sessions, agent, sites, SpanningGroups(config, agents, agent),
                          locate=app.state.volumes.locate,
                          vm_sinks=VmSinks(agents, app.state.vms, app.state.volumes))
    app.state.sites = sites
    app.state.unpairing = Unpairing(config, sites, agent)
    app.state.groups = groups
    app.state.vm_configs = VmConfigs(groups)
    app.state.group_settings = SettingsUpdates(config, groups, agent)
    app.state.exports = ExportService(agent, groups)
    app.state.files = FileService(agent, groups)
    operations, reports = OperationStore(sessions), ReportStore(config.reports_dir)
    failover_tests = FailoverTestService(config, operations, reports, agent, groups)
    clones = CloneService(config, operations, reports, agent, groups)
    app.state.failover_tests, app.state.clones, app.state.reports = failover_tests, clones, reports
    live = FailoverLiveService(config, operations, reports, agent, groups)
    app.state.reverse = ReverseProtection(config, groups, agent, sites)
    live.reverse = app.state.reverse.reverse
    app.state.live, policies = live, CommitPolicyTimer(live)
    app.state.group_members = GroupMembership(config, groups, operations,
                                              app.state.volumes.locate)
    # status, alerts, events, tasks
    monitor = install_monitoring(app, config, sessions, clones, agents)
    app.state.vm_groups = VmGroups(app.state.group_members)
    monitor.followers.append(HotPlugs(app.state.vm_groups).follow)
    app.state.metrics = metrics_service.MetricsService(
        config, groups, agent_client(config, timeout_s=metrics_service.AGENT_TIMEOUT_S))

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, Any]:  # on the event loop: no thread to wait for
        return {"status": "ok", "site": config.name, "version": __version__}

    for router in (access_router, sites_router, agents_router, volumes_router, vms_router,
                   groups_router, group_settings_router, group_members_router, exports_router,
                   recovery_router, files_router, metrics_router):
        app.include_router(router)
    mount_console(app)  # the web console, at / (last: it takes the paths the API does not)
    return app


def body_limit_bytes(path: str) -> int:
    """Every route takes a small JSON body at most; a login's is smaller still."""
    return LOGIN_BODY_LIMIT_BYTES if path == "/api/v1/login" else JSON_BODY_LIMIT_BYTES


def _answer_database_full(app: FastAPI) -> None:
    """A write the database refuses for want of space is answered 507 ``database_full``,
    not 500; any other database error stays a bug (500)."""

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if not is_out_of_space(exc):
            raise exc
        error = DatabaseFull(f"the manager's database is out of space: {str(exc.orig).strip()}")
        return JSONResponse(status_code=error.http_status, content=error.body())


def _reconcile_recovery(*services: OperationRunner | CloneService) -> None:
    """Resume or roll back the recovery operations an earlier manager process left active."""
    for service in services:
        try:
            service.reconcile()
        except SeawallError as exc:  # e.g. no agent yet: every recovery request retries it
            log.warning("recovery operations not reconciled at start: %s", exc.message)
