"""`GET /metrics` (Prometheus) and `GET /api/v2/monitoring/ray-targets` (Prometheus `http_sd`).

Both take the admin token or the metrics token (`argus.service.metrics.metrics_reader`); no
token or an unknown one is 401, a user's token 403. `/metrics` answers OpenMetrics text when the
scraper asks for it (Prometheus does), else Prometheus's text format. The Ray targets are every
alive Ray node's metrics agent, head included, as Prometheus's HTTP service discovery reads
them: `[{"targets": ["<ip>:<port>"], "labels": {...}}]`; 503 when Ray cannot be read. Both run
on the Ray threads: a scrape may wait a few seconds on Ray, never on the event loop.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field, RootModel

from argus.cluster.errors import ClusterError
from argus.service.api_models import ApiModel, JSONBody, errors
from argus.service.errors import APIError
from argus.service.metrics import metrics_reader
from argus.service.metrics_collect import node_name, node_pool
from argus.service.threads import on_ray_threads

router = APIRouter(tags=["operations"])
Reader = Annotated[None, Depends(metrics_reader)]
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class RayTargetLabels(ApiModel):
    node: str = Field(description="The node's `argus.io/node` label, else its Ray node id's first 12 characters")
    pool: str = Field(description="The node's `pool` label, `-` when it has none")
    ray_node_id: str
    ray_head: Literal["true", "false"]


class RayTarget(ApiModel):
    targets: list[str] = Field(description="`<node ip>:<metrics export port>`, Ray's metrics agent")
    labels: RayTargetLabels


class RayTargets(RootModel[list[RayTarget]]):
    """Prometheus `http_sd_configs` targets: one group per alive Ray node."""


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics (admin or metrics token)",
    responses={
        200: {"content": {OPENMETRICS: {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}},
        **errors(401, 403, text_route=True),
    },
)
async def metrics(request: Request, _: Reader) -> Response:
    body, content_type = await on_ray_threads(request, request.app.state.metrics.render, request.headers.get("accept"))
    return Response(body, media_type=content_type)


def _targets(request: Request) -> list[dict]:
    try:
        snap = request.app.state.snapshots.snapshot()
    except ClusterError as exc:
        raise APIError(503, f"Ray cannot be read: {exc}") from None
    return [
        {
            "targets": [f"{n.node_ip}:{n.metrics_export_port}"],
            "labels": {
                "node": node_name(n),
                "pool": node_pool(n),
                "ray_node_id": n.node_id,
                "ray_head": "true" if n.is_head else "false",
            },
        }
        for n in snap.nodes
        if n.alive and n.metrics_export_port
    ]


@router.get(
    "/api/v2/monitoring/ray-targets",
    summary="Ray nodes' metrics endpoints for Prometheus's HTTP service discovery (admin or metrics token)",
    response_model=RayTargets,
    responses=errors(401, 403, 503),
)
async def ray_targets(request: Request, _: Reader) -> JSONBody:
    return JSONBody(await on_ray_threads(request, _targets, request))
