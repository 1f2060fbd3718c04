"""ASGI middleware of the service: the request body limit.

Owns refusing a body over `service.max_body_bytes` with 413 before any route reads it: by its
Content-Length when it has one (the server then stops reading there), else by counting a chunked
body up to the limit and replaying it to the app. A path may have a limit of its own (the code
upload: `service.code_max_bytes`), named by its setting in the 413.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from argus.service.errors import error_response


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, by header or by counting."""

    def __init__(self, app: Any, limit: int, path_limits: Mapping[str, tuple[int, str]] | None = None):
        """`path_limits`: an exact request path -> its own limit and the setting that sets it."""
        self.app = app
        self.limit = limit
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
        limit, setting = self.path_limits.get(scope.get("path", ""), (self.limit, "service.max_body_bytes"))
        if length is not None and length.isdigit() and int(length) > limit:
            await error_response(413, f"the body is over {limit} bytes ({setting})")(scope, receive, send)
            return
        if length is not None:
            await self.app(scope, receive, send)  # the server stops reading at Content-Length
            return
        # A chunked body: read it here, up to the limit, and replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                await error_response(413, f"the body is over {limit} bytes ({setting})")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
