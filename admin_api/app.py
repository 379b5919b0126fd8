"""The HTTP side of Omni: a Quart-Trio application served by hypercorn's trio worker.

For now it serves ``/healthz`` and Prometheus ``/metrics``; the admin API (``/api/v1``) grows
here. It reaches the running server only through the hub it is given.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from quart import Response
from quart_trio import QuartTrio

from omni.actors.hub import Hub


def create_app(hub: Hub, registry: CollectorRegistry) -> QuartTrio:
    app = QuartTrio("omni")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "conversations": len(hub.conversations),
            "operators_online": len(hub.sessions),
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return app
