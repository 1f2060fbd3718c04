"""The service's Prometheus metrics: one registry per app, what feeds it, and who may read it.

Owns `Metrics` (the app's own `CollectorRegistry`, never prometheus_client's global one, with
the scrape-time `argus.service.metrics_collect.ArgusCollector` in it), `SchedulerMetrics` (the
scheduler's `SchedulerObserver`: `argus_scheduler_pass_seconds`,
`argus_scheduler_admissions_total`), `ApiMetrics` (a pure ASGI middleware:
`argus_api_requests_total{route,method,code}`, `argus_api_request_seconds{route}`, the route
being the matched route's template, "other" when none matched; `/metrics` scrapes count too;
summed over the server's API processes by `SummedRequests`) and
`metrics_reader`, the check of `/metrics` and the Ray targets: the admin token or the metrics
token (`service.metrics_token_env`), compared in constant time; none -> 401, a user's -> 403.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from argus.scheduler.link import metric_samples
from argus.service.errors import APIError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER_ROUTE = "other"


class SchedulerMetrics:
    """The scheduler's passes and admissions, observed in its own thread."""

    def __init__(self, registry: CollectorRegistry):
        self.passes = Histogram(
            "argus_scheduler_pass_seconds",
            "Duration of scheduler passes (sync, archive and admission; or admission only)",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.admissions = Counter("argus_scheduler_admissions", "Attempts the scheduler started", registry=registry)

    def pass_done(self, seconds: float, full: bool) -> None:
        self.passes.observe(seconds)

    def admitted(self, n: int) -> None:
        self.admissions.inc(n)


class RequestMetrics:
    """The API's request counter and latency histogram, children cached by their labels."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "argus_api_requests",
            "API requests by route template, method and status code",
            ["route", "method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "argus_api_request_seconds",
            "API request duration by route template",
            ["route"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[str, Any] = {}

    def observe(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method, code)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(route, method, str(code))
        timer = self._timers.get(route)
        if timer is None:
            timer = self._timers[route] = self.seconds.labels(route)
        counter.inc()
        timer.observe(seconds)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ApiMetrics:
    """ASGI middleware: each HTTP request counted under its route's template."""

    def __init__(self, app: Any, metrics: RequestMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        code = 500

        async def send_status(message: dict) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or OTHER_ROUTE
            method = scope.get("method", "")
            self.metrics.observe(template, method if method in _METHODS else "other", code, time.perf_counter() - t0)


Samples = list  # `argus.scheduler.link.metric_samples`: [[name, type, help, [[sample, labels, value]]]]


class SummedRequests:
    """A Prometheus collector: this process's request metrics plus those the other API
    processes last wrote (`others`), summed per sample and labels. A `_created` sample keeps the
    earliest; a family or label set only another process has is added as it is."""

    def __init__(self, own: CollectorRegistry, others: Callable[[], list[Samples]]):
        self.own, self.others = own, others

    def collect(self) -> Iterator[Metric]:
        theirs = self.others()
        if not theirs:
            yield from self.own.collect()
            return
        meta: dict[str, tuple[str, str]] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for samples in [metric_samples(self.own), *theirs]:
            for family in samples:
                _add(meta, values, family)
        for name, (kind, doc) in meta.items():
            out = Metric(name, doc, kind)
            for (sample, labels), value in values[name].items():
                out.add_sample(sample, dict(labels), value)
            yield out


def _add(meta: dict, values: dict, family: list) -> None:
    name, kind, doc, samples = family
    meta.setdefault(name, (kind, doc))
    into = values.setdefault(name, {})
    for sample, labels, value in samples:
        key = (sample, tuple(sorted(labels.items())))
        if key not in into:
            into[key] = value
        elif sample.endswith("_created"):
            into[key] = min(into[key], value)
        else:
            into[key] += value


class Metrics:
    """The app's registry and its feeds (the scrape-time collector is registered by the wiring)."""

    def __init__(
        self,
        admin_token: str | None,
        metrics_token: str | None,
        scheduler: bool = True,
        other_processes: Callable[[], list[Samples]] | None = None,
    ):
        """`scheduler`: the scheduler runs in this process (else its process's metrics are
        served here by the collector that reads them, `argus.scheduler.link.StatusReader`).
        `other_processes`: the request metrics the server's other API processes last wrote,
        summed with this one's on `/metrics`."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.scheduler = SchedulerMetrics(self.registry) if scheduler else None
        # The request metrics have a registry of their own, so that an API process can write
        # them out (`argus.service.api_processes`) and the first one can sum them.
        self.request_registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(self.request_registry)
        self.registry.register(SummedRequests(self.request_registry, other_processes or list))
        self._tokens = [t.encode() for t in (admin_token, metrics_token) if t]

    def may_read(self, token: str) -> bool:
        """Whether `token` is the admin token or the metrics token (constant time each)."""
        given = token.encode()
        return any(hmac.compare_digest(given, t) for t in self._tokens)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper accepts it, else Prometheus text) and its
        content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


async def metrics_reader(request: Request) -> None:
    """FastAPI dependency: the admin or the metrics token, else 401 (no or unknown token) or 403
    (a user's token)."""
    header = request.headers.get("authorization")
    scheme, _, token = (header or "").partition(" ")
    metrics: Metrics = request.app.state.metrics
    if scheme.lower() == "bearer" and token.strip() and metrics.may_read(token.strip()):
        return
    request.app.state.auth.identify(header)  # 401 for a missing, malformed or unknown token
    raise APIError(403, "metrics are for the admin or the metrics token only")
