"""``GET /metrics``: the site's metrics in Prometheus's text format (parse nothing, call, return).

An ordinary route on its own router, so whatever guards the API guards it too: Prometheus
scrapes it with a bearer token (``authorization`` in its scrape config).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from seawall.manager.metrics.service import MetricsService

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    service: MetricsService = request.app.state.metrics
    return Response(service.exposition(), media_type=CONTENT_TYPE_LATEST)
