"""The usage method of the Argus SDK: `UsageMixin`, which `argus.client.sdk.ArgusClient` inherits.

Owns the `/api/v2/usage` conversation: GPU-hours from the GPU-hour ledger over a window, grouped
by user, pool, UTC day or task. The HTTP plumbing (`_json`) is `argus.client.sdk_http.ApiSession`'s.
The window's bounds are sent as given (ISO 8601 dates or times, or epoch seconds): the service
parses and checks them.
"""

from __future__ import annotations

from typing import Any

from argus.client.sdk_http import ApiSession


class UsageMixin(ApiSession):
    """`ArgusClient`'s usage method, over the session's `_json`."""

    def usage(
        self,
        start: str | float | None = None,
        end: str | float | None = None,
        group_by: str = "user",
        user: str | None = None,
    ) -> dict:
        """GPU-hours, tasks, attempts, wait and run time in [start, end), like Slurm's `sreport`.

        Args:
            start, end: the window (`from`, `to`): ISO 8601 dates or times, or epoch seconds;
                default: the 7 days up to now.
            group_by: user, pool, day (UTC) or task.
            user: the admin only: one user's usage (a user always gets their own).
        Returns:
            `{"start", "end", "now", "group_by", "user", "rows": [...], "total": {...}}`, each
            row `{"key", "gpu_seconds", "gpu_hours", "tasks", "attempts", "wait_s", "run_s"}`.
        Raises:
            ArgusAPIError: 400 a bad `from`, `to`, `group_by` or `user` (named in `problems`),
                403 a user asking for another user's usage.
        """
        params: dict[str, Any] = {"group_by": group_by}
        if start is not None:
            params["from"] = str(start)
        if end is not None:
            params["to"] = str(end)
        if user is not None:
            params["user"] = user
        return self._json("GET", "/api/v2/usage", params=params)
