"""Wiring of status, alerts, history, the event log and tasks into the manager's app (called
by app.py).

It builds the services, installs the event middleware and the routes, and returns the
monitor for the app's lifespan to start and stop; the monitor's rounds feed the history.
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from seawall.config import SiteConfig
from seawall.manager.access.service import AccessService
from seawall.manager.events.log import EventLog
from seawall.manager.events.middleware import EventMiddleware
from seawall.manager.events.routes import router as events_router
from seawall.manager.groups.spanning import AgentReach
from seawall.manager.monitoring.alerts import AlertStore
from seawall.manager.monitoring.history import HistoryService
from seawall.manager.monitoring.history_routes import router as history_router
from seawall.manager.monitoring.monitor import Monitor, interval_from_env
from seawall.manager.monitoring.routes import router as monitoring_router
from seawall.manager.monitoring.service import StatusService
from seawall.manager.recovery.clones import CloneService
from seawall.manager.tasks.routes import router as tasks_router
from seawall.manager.tasks.service import TaskService


def install_monitoring(app: FastAPI, config: SiteConfig, sessions: sessionmaker[Session],
                       clones: CloneService, agents: AgentReach) -> Monitor:
    alerts = AlertStore(sessions)
    status = StatusService(config, sessions, alerts, agents)
    events = EventLog(sessions)
    app.state.alerts, app.state.status, app.state.events = alerts, status, events
    app.state.history = HistoryService(sessions)
    app.state.tasks = TaskService(sessions, status, clones)
    access: AccessService = app.state.access

    def identify(token: str) -> str | None:
        principal = access.authenticate(token)
        return principal.name if principal else None

    app.add_middleware(EventMiddleware, events=events, identify=identify)
    for router in (monitoring_router, history_router, events_router, tasks_router):
        app.include_router(router)
    monitor = Monitor(status, alerts, interval_from_env())
    monitor.followers.append(app.state.history.record)
    return monitor
