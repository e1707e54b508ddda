"""Task routes: parse, call ``TaskService``, return."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from seawall.manager.tasks.service import TaskService

router = APIRouter(prefix="/api/v1", tags=["tasks"])


@router.get("/tasks")
def list_tasks(request: Request,
               include_finished: bool = Query(False, alias="all")) -> list[dict[str, Any]]:
    tasks: TaskService = request.app.state.tasks
    return tasks.list(include_finished)
