"""Prometheus metrics of a web service: a registry per app, request latency by route, ``GET /metrics``.

Each app owns its :class:`~prometheus_client.CollectorRegistry` (never the process-wide default), so two
services, or many test apps, in one process keep separate counts. Routes are labelled by their template
(``/api/submissions``), never by the raw path, so a scan of random URLs adds one ``unmatched`` series,
not one per URL.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from starlette.responses import Response

__all__ = ["ServiceMetrics"]

# from a cached page (~1 ms) to a large batch on a CPU or a submission of a big test set (seconds)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServiceMetrics:
    """The registry of one app (``prefix``: ``fgvc_serve`` or ``fgvc_server``) and its request histogram."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.registry = CollectorRegistry()
        self.latency = Histogram(f"{prefix}_http_request_duration_seconds",
                                 "Time from a request's arrival to the end of its reply, by route template, "
                                 "method and status", ["method", "route", "status"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)

    def install(self, app: Any) -> None:
        """Time every request of the FastAPI ``app`` (call after its other middleware: this one goes outside)."""
        app.add_middleware(_TimedRequests, latency=self.latency)

    def response(self) -> Response:
        """``GET /metrics``: the registry in Prometheus' text format."""
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _TimedRequests:
    """ASGI middleware observing each HTTP request's duration under its route template and status."""

    def __init__(self, app: Any, latency: Histogram) -> None:
        self.app, self.latency = app, latency

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_timed(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.latency.labels(scope["method"], route, str(status)).observe(time.perf_counter() - start)
