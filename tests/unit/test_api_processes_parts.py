"""Parts of the several API processes (`argus.service.api_processes`) that need no server: which
paths go to the first process, the sum of the request metrics, the forwarding middleware's own
answers, and the settings check."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from argus.scheduler.link import metric_samples
from argus.service.metrics import RequestMetrics, SummedRequests
from argus.service.to_primary import ToPrimary, primary_only
from argus.settings import parse_settings
from argus.spec.errors import SpecError


@pytest.mark.parametrize(
    "path",
    ["/healthz", "/metrics", "/api/v2/nodes", "/api/v2/nodes/gpu-1", "/api/v2/nodes/gpu-1:drain", "/ui/nodes"],
)
def test_the_first_process_only_paths(path):
    assert primary_only(path)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/nodesX",
        "/api/v2/nodes-1",
        "/metricsx",
        "/metrics.txt",
        "/healthzz",
        "/ui/nodesgrid",
        "/api/v2/tasks",
        "/api/v2/me",
        "/ui/tasks",
        "/",
        "/api/v2",
        "/api/v2/node",
    ],
)
def test_near_misses_are_served_where_they_land(path):
    assert not primary_only(path)


def test_ui_nodes_subpaths_go_to_the_first_process():
    assert primary_only("/ui/nodes/grid")


# -- SummedRequests -------------------------------------------------------------------------


def _samples(metrics: list, family: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of `family` in collected metrics."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics if m.name == family for s in m.samples}


def _other_process(observations: list[tuple[str, str, int, float]], created: float) -> list:
    """What another API process writes (`metric_samples` of its request registry), its
    `_created` samples set to `created`."""
    registry = CollectorRegistry(auto_describe=False)
    metrics = RequestMetrics(registry)
    for route, method, code, seconds in observations:
        metrics.observe(route, method, code, seconds)
    samples = json.loads(json.dumps(metric_samples(registry)))  # as read back from its file
    for _name, _kind, _doc, family in samples:
        for sample in family:
            if sample[0].endswith("_created"):
                sample[2] = created
    return samples


def test_summed_requests_add_the_other_processes_counts_per_label_set():
    own = CollectorRegistry(auto_describe=False)
    mine = RequestMetrics(own)
    mine.observe("/api/v2/tasks", "POST", 201, 0.003)
    mine.observe("/api/v2/tasks", "POST", 201, 0.3)
    mine.observe("/api/v2/me", "GET", 200, 0.001)
    own_created = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in own.collect()
        for s in m.samples
        if s.name.endswith("_created")
    }
    early, late = min(own_created.values()) - 1000.0, max(own_created.values()) + 1000.0
    files = [
        _other_process([("/api/v2/tasks", "POST", 201, 0.003), ("/api/v2/tasks", "POST", 429, 0.002)], early),
        _other_process([("/api/v2/tasks", "POST", 201, 2.0), ("/api/v2/me", "GET", 200, 0.001)], late),
    ]
    summed = list(SummedRequests(own, lambda: files).collect())
    assert {m.name for m in summed} == {"argus_api_requests", "argus_api_request_seconds"}
    assert {m.name: m.type for m in summed} == {
        "argus_api_requests": "counter",
        "argus_api_request_seconds": "histogram",
    }

    tasks_201 = (("code", "201"), ("method", "POST"), ("route", "/api/v2/tasks"))
    tasks_429 = (("code", "429"), ("method", "POST"), ("route", "/api/v2/tasks"))
    me_200 = (("code", "200"), ("method", "GET"), ("route", "/api/v2/me"))
    counter = _samples(summed, "argus_api_requests")
    assert counter[("argus_api_requests_total", tasks_201)] == 4.0  # 2 here, 1 and 1 in the files
    assert counter[("argus_api_requests_total", me_200)] == 2.0
    assert counter[("argus_api_requests_total", tasks_429)] == 1.0  # a label set only a file has
    # `_created`: the earliest of all.
    assert counter[("argus_api_requests_created", tasks_201)] == early
    assert counter[("argus_api_requests_created", tasks_429)] == early
    assert counter[("argus_api_requests_created", me_200)] == own_created[("argus_api_requests_created", me_200)]

    hist = _samples(summed, "argus_api_request_seconds")
    tasks = (("route", "/api/v2/tasks"),)
    assert hist[("argus_api_request_seconds_count", tasks)] == 5.0
    assert hist[("argus_api_request_seconds_sum", tasks)] == pytest.approx(0.003 + 0.3 + 0.003 + 0.002 + 2.0)
    assert hist[("argus_api_request_seconds_bucket", (("le", "0.005"), *tasks))] == 3.0
    assert hist[("argus_api_request_seconds_bucket", (("le", "0.5"), *tasks))] == 4.0
    assert hist[("argus_api_request_seconds_bucket", (("le", "+Inf"), *tasks))] == 5.0
    assert hist[("argus_api_request_seconds_created", tasks)] == early

    # It renders as one family each (a registry scrape does not trip on the sums).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SummedRequests(own, lambda: files))
    text = generate_latest(registry).decode()
    assert text.count("# TYPE argus_api_requests_total counter") == 1, text
    assert 'argus_api_requests_total{code="201",method="POST",route="/api/v2/tasks"} 4.0' in text


def test_summed_requests_without_files_are_this_processs_own():
    own = CollectorRegistry(auto_describe=False)
    RequestMetrics(own).observe("/api/v2/me", "GET", 200, 0.001)
    summed = _samples(list(SummedRequests(own, list).collect()), "argus_api_requests")
    assert summed == _samples(list(own.collect()), "argus_api_requests")


# -- ToPrimary ------------------------------------------------------------------------------


class Inner:
    """An ASGI app that records its calls and answers 204."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": [(b"x-inner", b"1")]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _scope(path: str, method: str = "GET", query: bytes = b"", headers: list | None = None) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers or [(b"host", b"testserver")],
    }


def _drive(app, scope: dict, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    """Run one request through `app`; its status, headers and body."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def go() -> None:
        try:
            await app(scope, receive, send)
        finally:
            if getattr(app, "_client", None) is not None:
                await app._client.aclose()

    asyncio.run(go())
    start = sent[0]
    assert start["type"] == "http.response.start"
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/api/v2/nodes", "/ui/nodes/grid"])
def test_to_primary_answers_503_as_json_when_the_first_process_cannot_be_reached(tmp_path, path):
    inner = Inner()
    status, headers, body = _drive(ToPrimary(inner, tmp_path / "primary.sock"), _scope(path))
    assert status == 503
    assert headers[b"content-type"].startswith(b"application/json")
    answer = json.loads(body)
    assert set(answer) == {"error", "message", "problems"}
    assert "first process cannot be reached" in answer["message"], answer
    assert inner.paths == []  # never served here


@pytest.mark.parametrize("path", ["/api/v2/tasks", "/api/v2/nodesX", "/metricsx", "/ui/tasks"])
def test_to_primary_passes_other_paths_to_the_inner_app(tmp_path, path):
    inner = Inner()
    status, headers, _ = _drive(ToPrimary(inner, tmp_path / "primary.sock"), _scope(path, "POST"))
    assert (status, headers[b"x-inner"]) == (204, b"1")
    assert inner.paths == [path]


def test_to_primary_passes_non_http_scopes_to_the_inner_app(tmp_path):
    seen: list[str] = []

    async def inner(scope, receive, send) -> None:
        seen.append(scope["type"])

    asyncio.run(ToPrimary(inner, tmp_path / "primary.sock")({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]


def test_to_primary_forwards_the_request_and_its_answer_over_the_socket(tmp_path):
    """A stand-in first process on the Unix socket: it gets the method, target, body and
    end-to-end headers (not the hop-by-hop ones); the caller gets its status, headers and body."""
    sock = tmp_path / "primary.sock"
    got: dict[str, bytes] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        got["head"] = head
        length = int(
            next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        got["body"] = await reader.readexactly(length)
        answer = b'{"nodes": []}'
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nX-From: primary\r\n"
            b"Date: Mon, 30 Nov 2026 23:00:00 GMT\r\nServer: uvicorn\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        writer.close()

    sent: list[dict] = []

    async def go() -> None:
        server = await asyncio.start_unix_server(handle, path=str(sock))
        app = ToPrimary(Inner(), sock)
        scope = _scope(
            "/api/v2/nodes",
            "POST",
            b"x=1",
            [
                (b"host", b"argus"),
                (b"authorization", b"Bearer t"),
                (b"connection", b"keep-alive"),
                (b"keep-alive", b"timeout=5"),
                (b"content-length", b"7"),
            ],
        )

        async def receive() -> dict:
            return {"type": "http.request", "body": b'{"a":1}', "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        try:
            await app(scope, receive, send)
        finally:
            await app._http().aclose()
            server.close()
            await server.wait_closed()

    asyncio.run(go())
    request_line, *lines = got["head"].decode("latin-1").split("\r\n")
    assert request_line == "POST /api/v2/nodes?x=1 HTTP/1.1"
    names = {line.split(":", 1)[0].lower() for line in lines if line}
    assert "authorization" in names
    assert "keep-alive" not in names and "timeout=5" not in got["head"].decode("latin-1")  # hop-by-hop
    assert got["body"] == b'{"a":1}'
    assert sent[0]["status"] == 400
    headers = {k.lower(): v for k, v in sent[0]["headers"]}
    assert headers[b"x-from"] == b"primary" and b"connection" not in headers
    assert b"date" not in headers and b"server" not in headers  # this process's server adds its own
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b'{"nodes": []}'
    assert sent[-1]["more_body"] is False


# -- the settings ---------------------------------------------------------------------------


def _settings(**sections):
    return parse_settings({"ray": {"shared_root": "/srv/shared"}, **sections}, environ={})


def test_several_api_processes_need_the_scheduler_in_its_own_process():
    with pytest.raises(SpecError) as err:
        _settings(service={"api_processes": 2}, scheduler={"own_process": False})
    assert [p.field for p in err.value.problems] == ["service.api_processes"]
    assert "own_process" in err.value.problems[0].reason


def test_several_api_processes_are_accepted_without_a_scheduler_or_with_its_own_process():
    assert (
        _settings(
            service={"api_processes": 2}, scheduler={"enabled": False, "own_process": False}
        ).service.api_processes
        == 2
    )
    assert _settings(service={"api_processes": 2}).service.api_processes == 2  # own_process is the default
    assert _settings(service={"api_processes": 1}, scheduler={"own_process": False}).service.api_processes == 1


def test_the_environment_can_ask_for_several_api_processes_and_is_checked_the_same():
    with pytest.raises(SpecError):
        parse_settings(
            {"ray": {"shared_root": "/srv/shared"}, "scheduler": {"own_process": False}},
            environ={"ARGUS_SERVICE_API_PROCESSES": "2"},
        )


@pytest.mark.parametrize("n", [0, 33])
def test_api_processes_are_1_to_32(n):
    with pytest.raises(SpecError):
        _settings(service={"api_processes": n})
