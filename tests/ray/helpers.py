"""Helpers for tests against the real local Ray cluster."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from argus.cluster.jobs import JobView, RayJobTool
from argus.spec.config import RayConfig
from argus.spec.render import prepare_submission

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def submit(config: RayConfig, yaml_text: str, submission_id: str | None = None) -> tuple[RayJobTool, str, object]:
    _, rendered = prepare_submission(config, yaml_text, datetime.now(timezone.utc), "test", submission_id=submission_id)
    tool = RayJobTool(config)
    return tool, tool.submit(rendered, yaml_text), rendered


def wait_for(tool: RayJobTool, sid: str, statuses: set[str], timeout: float = 120) -> JobView:
    deadline = time.monotonic() + timeout
    view = None
    while time.monotonic() < deadline:
        view = tool.status(sid)
        if view.status in statuses:
            return view
        if view.status in TERMINAL:
            raise AssertionError(f"{sid} ended {view.status} while waiting for {statuses}: {view.message}\n"
                                 f"{tool.logs(sid, 40)}")
        time.sleep(0.5)
    raise AssertionError(f"{sid} still {view.status if view else '?'} after {timeout}s")


def markers(log: str) -> list[str]:
    return [line.split(" ", 1)[1].strip() for line in log.splitlines() if line.startswith("MARKER ")]


def user_client(url: str, admin_token: str, user: str):
    """A client for `user` (created if new) with a fresh token issued by the admin."""
    from argus.client.sdk import ArgusAPIError, ArgusClient

    admin = ArgusClient(url, admin_token)
    try:
        admin.create_user(user)
    except ArgusAPIError as exc:
        assert exc.status == 409
    return ArgusClient(url, admin.issue_token(user)["token"])


def wait_state(client, tid: str, states: set[str], timeout: float = 120) -> dict:
    """Poll the task until its state is one of `states`; fail with the task after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        task = client.task(tid)
        if task["state"] in states or time.monotonic() > deadline:
            assert task["state"] in states, f"{tid} is {task['state']} after {timeout}s, not {states}: {task}"
            return task
        time.sleep(0.3)
