"""The HTTP plumbing of the Argus SDK: `ApiSession`, the base of `argus.client.sdk.ArgusClient`.

Owns the conversation with the service below the resource methods: one keep-alive
`httpx.Client` per session, bearer auth, the pause and clock that polling uses, the SDK's
errors, and parsing the uniform error body into `ArgusAPIError`. Invariants: `request` returns
only 2xx responses; every other status becomes `ArgusAPIError` and every transport failure
`ArgusUnavailable`, whose message names the URL, method and path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import httpx


class ArgusError(Exception):
    """Base class of the SDK's errors."""


class ArgusAPIError(ArgusError):
    """The service answered with a non-2xx status.

    Attributes:
        status: the HTTP status code.
        error: the machine-readable code (`bad_request`, `not_found`, ...).
        message: the human-readable message.
        problems: one `{"field": ..., "message": ...}` per invalid field (possibly empty).
    """

    def __init__(self, status: int, error: str, message: str, problems: list[dict[str, str]] | None = None):
        self.status = status
        self.error = error
        self.message = message
        self.problems = list(problems or [])
        super().__init__(f"{status} {error}: {message}")


class ArgusUnavailable(ArgusError):
    """The service could not be reached (refused, unresolvable, timed out, broken connection)."""


def _problem(item: Any) -> dict[str, str]:
    if isinstance(item, Mapping):
        field = item.get("field")
        if field is None and isinstance(item.get("loc"), (list, tuple)):  # FastAPI's own 422 shape
            field = ".".join(str(p) for p in item["loc"] if p != "body")
        message = item.get("message", item.get("msg", ""))
        return {"field": str(field if field is not None else ""), "message": str(message)}
    return {"field": "", "message": str(item)}


def error_from_response(response: httpx.Response) -> ArgusAPIError:
    """Parse an error response into `ArgusAPIError`, tolerating bodies that are not the API's.

    Args:
        response: a response with a non-2xx status.
    Returns:
        The error; `error` falls back to the reason phrase in snake case and `message` to the
        body text (or the reason phrase) when the body is not the documented JSON.
    """
    status = response.status_code
    reason = response.reason_phrase or f"HTTP {status}"
    error = reason.lower().replace(" ", "_").replace("-", "_")
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, Mapping):
        problems_raw = body.get("problems")
        detail = body.get("detail")
        if problems_raw is None and isinstance(detail, list):
            problems_raw = detail
        message = body.get("message")
        if message is None:
            message = detail if isinstance(detail, str) else reason
        problems = [_problem(p) for p in problems_raw] if isinstance(problems_raw, list) else []
        return ArgusAPIError(status, str(body.get("error") or error), str(message), problems)
    text = response.text.strip() if body is None else json.dumps(body)
    if len(text) > 500:
        text = text[:500] + "..."
    return ArgusAPIError(status, error, text or reason, [])


class ApiSession:
    """A connection to one Argus service, authenticated by one token.

    Args:
        url: the service's base URL (`http://host:port`).
        token: the bearer token (admin or user); None sends no Authorization header.
        timeout: seconds for connecting and for each read.
        transport: an httpx transport to use instead of the network (tests).
        sleep, clock: the pause and the monotonic clock of the polling methods (tests).
    Raises:
        ValueError: the URL is not http(s).
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the service URL must start with http:// or https://, got {url!r}")
        self.url = url
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=url + "/", headers=headers, timeout=timeout, transport=transport)
        self._sleep = sleep
        self._clock = clock

    def close(self) -> None:
        """Close the keep-alive connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request and return its 2xx response.

        Raises:
            ArgusAPIError: the status is not 2xx.
            ArgusUnavailable: the service could not be reached.
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
            raise ArgusUnavailable(
                f"cannot reach the Argus service at {self.url}: "
                f"{method} {path} {kind} ({str(exc) or type(exc).__name__})"
            ) from exc
        if not response.is_success:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request`, then the body parsed as JSON.

        Raises:
            ArgusAPIError: as `request`, or `bad_response` when a 2xx body is not JSON.
        """
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ArgusAPIError(
                response.status_code, "bad_response", f"{method} {path} answered with a body that is not JSON"
            ) from exc
