"""Why a task waits, in a real browser against a real `argus server` on the real local Ray
cluster: a task that asks for 8 GPUs on one node (each node has 4) shows the scheduler's
pending reason on its own page, which refreshes itself while the task waits, and in its row of
the queue page. Run under the shared lock: `flock /tmp/argus-ray-tests.lock .venv/bin/python -m
pytest -q tests/browser`.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from argus.testing.sandbox import Sandbox
from argus.testing.server import wait_state

from .checks import cancel, never_starts
from .support import Console, login

# The scheduler's words (argus.domain.scheduling): the demand, then what the nodes offer.
TOO_BIG = re.compile(r"^Resources: needs 1 node\(s\) x 8 GPU\(s\); largest free bundle is [0-4]")


def test_a_task_too_big_for_any_node_shows_its_reason_on_its_page_and_in_the_queue(
    console: Console, sandbox: Sandbox, page: Page
):
    jan = console.user("jan")
    tid = jan.api.submit(never_starts(sandbox))["task_id"]
    try:
        login(page, jan.token)
        # Opened at once: the reason arrives with the scheduler's next pass, in place.
        page.goto(f"/ui/tasks/{tid}")
        expect(page.locator("#task-state")).to_have_text("PENDING_RESOURCES", timeout=15_000)
        expect(page.locator("#pending-reason")).to_have_text(TOO_BIG, timeout=15_000)
        reason = wait_state(jan.api, tid, {"PENDING_RESOURCES"}, timeout=5)["pending_reason"]
        expect(page.locator("#pending-reason")).to_have_text(reason)

        page.get_by_role("navigation").get_by_role("link", name="Queue", exact=True).click()
        expect(page).to_have_url(re.compile(r"/ui/queue$"))
        row = page.locator(f'table.queue-waiting tr[data-task-id="{tid}"]')
        expect(row).to_have_count(1)
        expect(row.locator("td.reason")).to_have_text(TOO_BIG)
        expect(row.locator(".badge")).to_have_text("PENDING_RESOURCES")
        expect(row.get_by_role("link", name=tid)).to_have_attribute("href", f"/ui/tasks/{tid}")
        expect(page.locator(f'table.queue-running tr[data-task-id="{tid}"]')).to_have_count(0)
    finally:
        cancel(jan.api, tid)
