"""Helpers for tests against the real local Ray cluster."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timezone

from argus.cluster.jobs import JobView, RayJobTool
from argus.spec.config import RayConfig
from argus.spec.render import prepare_submission
from argus.testing.server import user_client, wait_state

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def submit(config: RayConfig, yaml_text: str, submission_id: str | None = None) -> tuple[RayJobTool, str, object]:
    _, rendered = prepare_submission(config, yaml_text, datetime.now(UTC), "test", submission_id=submission_id)
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
            raise AssertionError(
                f"{sid} ended {view.status} while waiting for {statuses}: {view.message}\n{tool.logs(sid, 40)}"
            )
        time.sleep(0.5)
    raise AssertionError(f"{sid} still {view.status if view else '?'} after {timeout}s")


def markers(log: str) -> list[str]:
    return [line.split(" ", 1)[1].strip() for line in log.splitlines() if line.startswith("MARKER ")]
