"""The Python SDK of the Argus REST API (v2, see docs/api.md) and the saved CLI credentials.

Owns the API's resources as methods of `ArgusClient`: tasks (submit, list with cursor paging,
details, attempts, cancel, priority, logs, following the log and waiting for a final state, the
queue), identity and users; quoting of task ids in paths. The HTTP plumbing (connection, auth,
errors) is `argus.client.sdk_http`'s and the node methods `argus.client.sdk_nodes`'s; their
public names are re-exported here. Also owns where `argus login` keeps the URL and token
(`credentials.json`, mode 0600) and how the environment overrides them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from argus.client.sdk_code import CodeMixin
from argus.client.sdk_http import (
    ApiSession,
    ArgusAPIError,
    ArgusError,
    ArgusUnavailable,
    error_from_response,
)
from argus.client.sdk_nodes import NodesMixin, node_path
from argus.client.sdk_secrets import SecretsMixin
from argus.client.sdk_usage import UsageMixin

__all__ = [
    "FINAL_STATES",
    "LOGIN_HINT",
    "STATES",
    "YAML_CONTENT_TYPE",
    "ApiSession",
    "ArgusAPIError",
    "ArgusClient",
    "ArgusError",
    "ArgusUnavailable",
    "Credentials",
    "CredentialsError",
    "credentials_path",
    "error_from_response",
    "load_credentials",
    "node_path",
    "save_credentials",
    "task_path",
]

FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"})
STATES = frozenset({"QUEUED", "PENDING_RESOURCES", "SUBMITTED", "RUNNING"}) | FINAL_STATES
YAML_CONTENT_TYPE = "application/yaml"
LOGIN_HINT = "run `argus login --url URL --token TOKEN` (or set ARGUS_URL and ARGUS_TOKEN)"


def task_path(task_id: str, suffix: str = "") -> str:
    """The path of one task's route, the id quoted as a single path segment.

    Raises:
        ValueError: the task id is empty.
    """
    if not task_id:
        raise ValueError("task id must not be empty")
    segment = quote(task_id, safe="")
    if segment in (".", ".."):  # would be resolved as a dot-segment otherwise
        segment = segment.replace(".", "%2E")
    return f"/api/v2/tasks/{segment}{suffix}"


class ArgusClient(NodesMixin, SecretsMixin, CodeMixin, UsageMixin):
    """A connection to one Argus service, authenticated by one token: the API's resources.

    Args:
        url: the service's base URL (`http://host:port`).
        token: the bearer token (admin or user); None sends no Authorization header.
        timeout: seconds for connecting and for each read.
        transport: an httpx transport to use instead of the network (tests).
        sleep, clock: the pause and the monotonic clock of `follow_logs`, `wait` and
            `wait_node` (tests).
    Raises:
        ValueError: the URL is not http(s).
    """

    # -- operations and identity ------------------------------------------------------------
    def health(self) -> dict:
        """`GET /healthz`: database and scheduler liveness."""
        return self._json("GET", "/healthz")

    def me(self) -> dict:
        """`GET /api/v2/me`: `{"user_id", "is_admin"}` of the token's owner."""
        return self._json("GET", "/api/v2/me")

    # -- tasks ------------------------------------------------------------------------------
    def submit(self, yaml_text: str) -> dict:
        """Submit a TaskSpec, sent verbatim as YAML.

        Returns:
            `{"task_id", "state"}`.
        Raises:
            ArgusAPIError: 400 with `problems` when the spec is invalid, 413 when too large.
        """
        return self._json(
            "POST",
            "/api/v2/tasks",
            content=yaml_text.encode("utf-8"),
            headers={"Content-Type": YAML_CONTENT_TYPE},
        )

    def resubmit(self, task_id: str, time_limit: str | int | None = None, priority: int | None = None) -> dict:
        """Continue an ended task of yours as a new task, from its latest checkpoint: the server
        submits its TaskSpec again with `resume_from: <task_id>` and the options given.

        Returns:
            `{"task_id", "state"}` of the new task.
        Raises:
            ArgusAPIError: 404 unknown task, 400 the task has not ended or an option is invalid.
        """
        options = {k: v for k, v in (("time_limit", time_limit), ("priority", priority)) if v is not None}
        return self._json("POST", task_path(task_id, ":resubmit"), json=options)

    def tasks(self, state: list[str] | str | None = None, limit: int = 50, cursor: str | None = None) -> dict:
        """One page of tasks, newest first.

        Args:
            state: one state, several (list or comma-separated) or None for all.
            limit: page size, 1..500.
            cursor: the previous page's `next_cursor`.
        Returns:
            `{"tasks": [...], "next_cursor": str | None}`.
        """
        states = [state] if isinstance(state, str) else list(state or [])
        params: list[tuple[str, Any]] = [("state", s) for s in states] + [("limit", limit)]
        if cursor is not None:
            params.append(("cursor", cursor))
        return self._json("GET", "/api/v2/tasks", params=params)

    def iter_tasks(self, state: list[str] | str | None = None, limit: int = 100) -> Iterator[dict]:
        """Every task summary, newest first, following `next_cursor` page by page.

        Raises:
            ArgusAPIError: the service returned the same cursor twice (a paging bug).
        """
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = self.tasks(state=state, limit=limit, cursor=cursor)
            yield from page.get("tasks", [])
            cursor = page.get("next_cursor")
            if cursor is None:
                return
            cursor = str(cursor)
            if cursor in seen:
                raise ArgusAPIError(200, "bad_response", f"the service repeated the cursor {cursor!r}")
            seen.add(cursor)

    def task(self, task_id: str) -> dict:
        """One task's details (state, latest attempt, reasons, its YAML)."""
        return self._json("GET", task_path(task_id))

    def attempts(self, task_id: str) -> dict:
        """`{"task_id", "attempts": [...]}`, oldest attempt first."""
        return self._json("GET", task_path(task_id, "/attempts"))

    def cancel(self, task_id: str) -> dict:
        """Cancel a task in any non-final state.

        Returns:
            `{"task_id", "state": "CANCELED"}`.
        Raises:
            ArgusAPIError: 409 when the task had already ended, 404 when unknown.
        """
        return self._json("POST", task_path(task_id, ":cancel"))

    def set_priority(self, task_id: str, priority: int) -> dict:
        """Admin: change a waiting task's priority (0-1000).

        Raises:
            ArgusAPIError: 403 not the admin, 409 the task is not waiting, 400 a bad value.
        """
        return self._json("POST", task_path(task_id, ":priority"), json={"priority": priority})

    def logs(self, task_id: str, attempt: int | str = "latest", tail: int | None = None) -> str:
        """The driver log of one attempt as text.

        Args:
            attempt: `"latest"` or an attempt number.
            tail: only the last N lines.
        Raises:
            ArgusAPIError: 404 when the task has no such attempt yet.
        """
        params: dict[str, Any] = {"attempt": attempt}
        if tail is not None:
            params["tail"] = tail
        return self.request("GET", task_path(task_id, "/logs"), params=params, headers={"Accept": "text/plain"}).text

    def follow_logs(self, task_id: str, poll_s: float = 1.0) -> Iterator[str]:
        """Yield the latest attempt's log as it grows, until the task reaches a final state.

        Each poll reads the task's state, then the log of its latest attempt, and yields the
        text beyond what was already yielded. When the log text is replaced (the live log by
        its archive) and no longer starts with what was yielded, nothing is yielded until it
        grows past the length already seen. A new attempt starts its log afresh.

        Raises:
            ArgusAPIError: the task is unknown (404) or another error than a missing attempt.
        """
        seen = ""
        attempt_no: Any = None
        while True:
            task = self.task(task_id)
            final = task.get("state") in FINAL_STATES
            latest = task.get("latest_attempt")
            if latest or "latest_attempt" not in task:  # None: no attempt yet
                number = latest.get("attempt_no") if isinstance(latest, dict) else None
                if number != attempt_no:
                    attempt_no, seen = number, ""
                text: str | None
                try:
                    text = self.logs(task_id, attempt=attempt_no if attempt_no is not None else "latest")
                except ArgusAPIError as exc:
                    if exc.status != 404:
                        raise
                    text = None
                # Grown: the text past what was seen. Replaced by the archive: nothing until
                # it grows past the length seen (the same slice, empty until then).
                if text is not None and text[len(seen) :]:
                    new, seen = text[len(seen) :], text
                    yield new
            if final:
                return
            self._sleep(poll_s)

    def wait(self, task_id: str, timeout_s: float, poll_s: float = 0.5) -> dict:
        """Poll a task until it reaches a final state.

        Returns:
            The task's details in its final state.
        Raises:
            TimeoutError: still not final after `timeout_s` seconds.
        """
        deadline = self._clock() + timeout_s
        while True:
            task = self.task(task_id)
            if task.get("state") in FINAL_STATES:
                return task
            if self._clock() >= deadline:
                raise TimeoutError(f"task {task_id} is still {task.get('state')} after {timeout_s:g}s")
            self._sleep(max(0.0, min(poll_s, deadline - self._clock())))

    def queue(self) -> dict:
        """`{"pending": [...], "running": [...]}`, oldest first."""
        return self._json("GET", "/api/v2/queue")

    # -- users (admin) ----------------------------------------------------------------------
    def users(self) -> dict:
        """`{"users": [{"user_id", "state", "created_at"}]}` (admin only)."""
        return self._json("GET", "/api/v2/users")

    def create_user(self, user_id: str) -> dict:
        """Create a user (admin only). Raises ArgusAPIError 409 when it exists, 400 when invalid."""
        return self._json("POST", "/api/v2/users", json={"user_id": user_id})

    def disable_user(self, user_id: str) -> dict:
        """Disable a user; every token of theirs is revoked at once, for good (admin only)."""
        return self._json("POST", f"/api/v2/users/{quote(user_id, safe='')}:disable")

    def enable_user(self, user_id: str) -> dict:
        """Re-enable a disabled user (admin only); their old tokens stay revoked.

        Returns:
            `{"user_id", "state": "ACTIVE"}`.
        Raises:
            ArgusAPIError: 404 no such user, 403 not the admin.
        """
        return self._json("POST", f"/api/v2/users/{quote(user_id, safe='')}:enable")

    def issue_token(self, user_id: str) -> dict:
        """Issue a new token for a user (admin only).

        Returns:
            `{"user_id", "token"}`; the plain token is shown only this once.
        """
        return self._json("POST", f"/api/v2/users/{quote(user_id, safe='')}/tokens")


# -- credentials ------------------------------------------------------------------------------
class CredentialsError(ArgusError):
    """No usable URL and token were given, found in the environment or saved."""


@dataclass(frozen=True)
class Credentials:
    """Where the service is and the token to call it with."""

    url: str
    token: str


def credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$ARGUS_CONFIG_DIR/credentials.json`, else under `$XDG_CONFIG_HOME/argus/`, else
    `~/.config/argus/`."""
    env = os.environ if environ is None else environ
    if env.get("ARGUS_CONFIG_DIR"):
        return Path(env["ARGUS_CONFIG_DIR"]).expanduser() / "credentials.json"
    base = Path(env["XDG_CONFIG_HOME"]).expanduser() if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "argus" / "credentials.json"


def save_credentials(creds: Credentials, path: Path | None = None) -> Path:
    """Write the credentials file readable by its owner only (0600, its new directory 0700).

    Returns:
        The file written.
    """
    path = Path(path) if path is not None else credentials_path()
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"url": creds.url, "token": creds.token}, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _read_saved(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read the credentials file {path}: {exc}; {LOGIN_HINT}") from exc
    if not isinstance(data, dict):
        raise CredentialsError(f"the credentials file {path} is not a JSON object; {LOGIN_HINT}")
    return {k: str(v) for k, v in data.items() if k in ("url", "token") and v}


def load_credentials(
    url: str | None = None, token: str | None = None, environ: Mapping[str, str] | None = None
) -> Credentials:
    """The URL and token to use: each from the argument, else `ARGUS_URL` / `ARGUS_TOKEN`,
    else the saved credentials file.

    Raises:
        CredentialsError: the URL or the token is found nowhere, or the file is unreadable.
    """
    env = os.environ if environ is None else environ
    url = url or env.get("ARGUS_URL") or None
    token = token or env.get("ARGUS_TOKEN") or None
    path = credentials_path(env)
    if url is None or token is None:
        saved = _read_saved(path)
        url = url or saved.get("url")
        token = token or saved.get("token")
    missing = [name for name, value in (("URL", url), ("token", token)) if not value]
    if missing:
        raise CredentialsError(f"no Argus {' or '.join(missing)} given, in the environment or in {path}; {LOGIN_HINT}")
    return Credentials(url=str(url), token=str(token))
