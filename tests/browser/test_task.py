"""Submitting a task and following it on its page, in a real browser against a real `argus
server` on the real local Ray cluster.

A TaskSpec pasted into the submit form lands on the new task's page, whose state badge changes
in place (htmx, no reload) until SUCCEEDED while the live log (server-sent events) shows the
code snapshot's `MARKER` line; an uploaded TaskSpec with a mistake comes back with the problem
next to its field. A waiting task is cancelled from its page through the confirmation page.
Another user's task is "Task not found", on its page, its cancel page and to a POST.
Run under the shared lock: `flock /tmp/argus-ray-tests.lock .venv/bin/python -m pytest -q
tests/browser`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from argus.testing.sandbox import Sandbox
from argus.testing.server import wait_state

from .checks import cancel, csrf_token, fast_task, never_starts
from .support import Console, ConsoleUser, login

TASK_URL = re.compile(r"/ui/tasks/([^/?#]+)$")
RUN_TIMEOUT_MS = 90_000
NOT_FOUND = "Task not found"


@pytest.fixture(scope="module")
def waiting(console: Console, sandbox: Sandbox) -> Iterator[tuple[ConsoleUser, str]]:
    """A user and their task that never starts (8 GPUs on one node)."""
    owner = console.user("owner")
    tid = owner.api.submit(never_starts(sandbox))["task_id"]
    yield owner, tid
    cancel(owner.api, tid)


def test_a_task_submitted_through_the_form_succeeds_in_place_with_its_marker_in_the_live_log(
    console: Console, sandbox: Sandbox, page: Page
):
    fay = console.user("fay")
    login(page, fay.token)
    page.goto("/ui/submit")
    page.get_by_label("TaskSpec", exact=True).fill(fast_task(sandbox, "grpo", "sim-b"))
    with page.expect_navigation():
        page.get_by_role("button", name="Submit").click()
    expect(page).to_have_url(TASK_URL)
    found = TASK_URL.search(page.url)
    assert found is not None
    tid = found.group(1)
    try:
        assert fay.api.task(tid)["user_id"] == fay.name
        expect(page.locator("#task-id")).to_have_text(tid)
        # From now on the page is never loaded again: the flag would be gone, and so would the
        # navigations counted here.
        page.evaluate("window.__stayed = 'yes'")
        assert page.locator("#task-state").inner_text() in {"QUEUED", "PENDING_RESOURCES", "SUBMITTED", "RUNNING"}
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
        expect(page.locator("#task-state")).to_have_text("SUCCEEDED", timeout=RUN_TIMEOUT_MS)
        expect(page.locator("#task-state")).to_have_class(re.compile(r"\bstate-SUCCEEDED\b"))
        # The log followed live, over server-sent events, until the attempt's end.
        log = page.locator("#log")
        expect(log).to_contain_text("MARKER sim-b", timeout=30_000)
        expect(log).to_contain_text("verl-sim: training finished after 2 steps", timeout=30_000)
        assert re.search(r"^MARKER sim-b$", log.inner_text(), re.M), log.inner_text()
        assert page.evaluate("window.__stayed") == "yes"
        assert navigations == [], navigations
        expect(page).to_have_url(TASK_URL)
        # The live part stopped polling once final: no Cancel for a finished task.
        expect(page.locator("#task-live")).not_to_have_attribute("hx-trigger", re.compile("."))
        expect(page.locator("#task-live").get_by_role("button", name="Cancel")).to_have_count(0)
        download = page.locator("#log-download")
        expect(download).to_have_attribute("href", f"/ui/tasks/{tid}/log?attempt=1")
        got = page.request.get(f"/ui/tasks/{tid}/log?attempt=1")
        assert got.status == 200 and "MARKER sim-b" in got.text(), (got.status, got.text()[:500])
    finally:
        cancel(fay.api, tid)


def test_an_uploaded_taskspec_with_a_mistake_shows_the_problem_next_to_its_field(
    console: Console, sandbox: Sandbox, page: Page, tmp_path: Path
):
    gus = console.user("gus")
    login(page, gus.token)
    page.goto("/ui/submit")
    bad = tmp_path / "task.yaml"
    bad.write_text(fast_task(sandbox, nnodes=0))
    page.get_by_label("or upload a TaskSpec file").set_input_files(str(bad))
    with page.expect_navigation() as answer:
        page.get_by_role("button", name="Submit").click()
    assert answer.value is not None and answer.value.status == 400, answer.value and answer.value.status
    problem = page.locator("ul.problems li[data-field='nnodes']")
    expect(problem).to_have_count(1)
    expect(problem).to_contain_text("nnodes")
    expect(page).to_have_url(re.compile(r"/ui/submit$"))
    assert gus.api.tasks()["tasks"] == []  # nothing was stored


def test_a_waiting_task_is_cancelled_from_its_page_through_the_confirmation(
    console: Console, sandbox: Sandbox, page: Page
):
    hal = console.user("hal")
    tid = hal.api.submit(never_starts(sandbox))["task_id"]
    try:
        login(page, hal.token)
        page.goto(f"/ui/tasks/{tid}")
        expect(page.locator("#task-state")).to_have_text(re.compile(r"^(QUEUED|PENDING_RESOURCES)$"))
        with page.expect_navigation():
            page.locator("#task-live").get_by_role("button", name="Cancel").click()
        expect(page).to_have_url(re.compile(rf"/ui/tasks/{tid}/cancel\??$"))
        expect(page.get_by_role("heading", name=f"Cancel task {tid}?")).to_be_visible()
        assert hal.api.task(tid)["state"] != "CANCELED"  # asking is not doing
        with page.expect_navigation():
            page.get_by_role("button", name="Yes, cancel").click()
        expect(page).to_have_url(re.compile(rf"/ui/tasks/{tid}$"))
        expect(page.locator("#task-state")).to_have_text("CANCELED", timeout=15_000)
        assert wait_state(hal.api, tid, {"CANCELED"}, timeout=15)["state"] == "CANCELED"
    finally:
        cancel(hal.api, tid)


def test_another_users_task_is_not_found(console: Console, page: Page, waiting: tuple[ConsoleUser, str]):
    owner, tid = waiting
    ivy = console.user("ivy")
    login(page, ivy.token)
    for path in (f"/ui/tasks/{tid}", f"/ui/tasks/{tid}/cancel"):
        answer = page.goto(path)
        assert answer is not None and answer.status == 404, (path, answer and answer.status)
        expect(page.get_by_role("alert")).to_have_text(NOT_FOUND)
        expect(page.locator("#task-state")).to_have_count(0)
    # The same answer as for a task that does not exist: nothing tells that it does.
    none = page.goto("/ui/tasks/tsk-does-not-exist")
    assert none is not None and none.status == 404
    expect(page.get_by_role("alert")).to_have_text(NOT_FOUND)
    # A POST of ivy's own good CSRF token cancels nothing of owner's.
    posted = page.request.post(f"/ui/tasks/{tid}/cancel", form={"csrf": csrf_token(page)}, max_redirects=0)
    assert posted.status == 404 and NOT_FOUND in posted.text(), (posted.status, posted.text()[:500])
    assert owner.api.task(tid)["state"] in {"QUEUED", "PENDING_RESOURCES"}
