"""What an extra API process hands to the first one: the routes that act through its threads.

Owns `ToPrimary`, the outermost ASGI layer of every API process but the first
(`argus.service.api_processes`). The node routes (`/api/v2/nodes…`, `/ui/nodes…`) act through the
node reconciler's locks and bring-up threads, and `/healthz` and `/metrics` report the scheduler
process and the request metrics of all the processes, which only the first one watches and sums.
A request for one of them is forwarded, headers and body as they came, over the first process's
private Unix socket, and its answer is passed back as it comes; the first process counts it in
its metrics, checks its body size and its caller. Every other request is served where it landed.
When the first process cannot be reached, the answer is a 503 that says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from argus.service.errors import error_response

PRIMARY_PATHS = ("/healthz", "/metrics", "/api/v2/nodes", "/ui/nodes")
# Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, not the request.
_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
# This process's server writes its own `date` and `server` headers: the first one's are dropped.
_NOT_PASSED_BACK = _HOP | {b"date", b"server"}
TIMEOUT_S = 300.0  # a node's bring-up answers at once; a scrape or a drain takes seconds at most


def primary_only(path: str) -> bool:
    """Whether `path` is served by the first API process only (a path with `.` or `..` segments
    never is: the forward would resolve them, and here no route matches it)."""
    if "/." in path:
        return False
    return any(path == prefix or path.startswith(prefix + "/") for prefix in PRIMARY_PATHS)


class ToPrimary:
    """ASGI middleware: `primary_only` paths forwarded to the first process (see the module)."""

    def __init__(self, app: Any, socket_path: str | Path):
        self.app = app
        self.socket_path = str(socket_path)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:  # made in the server's event loop, at the first forward
            transport = httpx.AsyncHTTPTransport(uds=self.socket_path)
            self._client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S)
        return self._client

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not primary_only(scope["path"]):
            await self.app(scope, receive, send)
            return
        await self.forward(scope, receive, send)

    async def forward(self, scope: dict, receive: Callable, send: Callable) -> None:
        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return

        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        client = self._http()
        request = client.build_request(
            scope["method"], "http://argus-primary" + target.decode("latin-1"), headers=headers, content=body()
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            reason = f"the API's first process cannot be reached: {type(exc).__name__}"
            await error_response(503, reason)(scope, receive, send)
            return
        try:
            out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _NOT_PASSED_BACK]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
