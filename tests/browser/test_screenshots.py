"""The README's pictures of the console: the tasks and nodes pages as the admin sees them with
a task running, one waiting and one finished. Made only on request, by
`ARGUS_UI_SCREENSHOTS=1 flock /tmp/argus-ray-tests.lock .venv/bin/python -m pytest -q
tests/browser/test_screenshots.py` (writes docs/console-tasks.png and docs/console-nodes.png).
"""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import Page, expect

from argus.testing.sandbox import Sandbox, task_yaml
from argus.testing.server import wait_state

from .support import SCREENSHOTS_ENV, Console, login, screenshot

pytestmark = pytest.mark.skipif(os.environ.get(SCREENSHOTS_ENV) != "1", reason=f"only with {SCREENSHOTS_ENV}=1")


def test_screenshots_of_the_tasks_and_nodes_pages(console: Console, sandbox: Sandbox, page: Page):
    ana, ben = console.user("ana"), console.user("ben")
    done = ana.api.submit(task_yaml(sandbox, "sft", n_gpus_per_node=1, total_training_steps=2))["task_id"]
    wait_state(ana.api, done, {"SUCCEEDED"}, timeout=120)
    long = {"total_training_steps": 400, "save_freq": -1, "env_vars": {"VERL_SIM_STEP_SECONDS": "0.5"}}
    running = [
        ana.api.submit(task_yaml(sandbox, "ppo", n_gpus_per_node=2, **long))["task_id"],
        ben.api.submit(task_yaml(sandbox, "grpo", n_gpus_per_node=4, **long))["task_id"],
    ]
    waiting = ben.api.submit(task_yaml(sandbox, "ppo", n_gpus_per_node=8))["task_id"]
    owners = {running[0]: ana, running[1]: ben, waiting: ben}
    try:
        for tid in running:
            wait_state(owners[tid].api, tid, {"RUNNING"}, timeout=90)
        login(page, console.admin_token)
        page.goto("/ui/tasks")
        expect(page.locator(f'tr[data-task-id="{waiting}"]')).to_contain_text("PENDING")
        screenshot(page, "tasks")
        page.goto("/ui/nodes")
        expect(page.locator("div.gpu.held")).to_have_count(6)  # 2 + 4 GPUs held in the grid
        screenshot(page, "nodes")
    finally:
        for tid, owner in owners.items():
            owner.api.cancel(tid)
