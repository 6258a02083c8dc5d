"""``GET /metrics``: the app's registry in the Prometheus text format (or OpenMetrics when the
scraper asks for it). Public, like ``/healthz`` (``server.metrics = false`` removes it): a
scraper usually has no key, and no label carries a key, a key id or a request id."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import choose_encoder

from kinema.api.deps import services_of

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    svc = services_of(request)
    assert svc.metrics is not None  # the route exists only when metrics are on
    await svc.metrics.refresh(svc.db)
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(svc.metrics.registry), media_type=content_type)
