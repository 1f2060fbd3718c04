"""The README's pictures of the console: the tasks and nodes pages as the admin sees them, with
a few users' tasks in every state (one finished, one failed, one cancelled, two running on 6 of
the 8 GPUs, two waiting: one for GPUs to free up, one too big for any node). Made only on
request, by `ARGUS_UI_SCREENSHOTS=1 flock /tmp/argus-ray-tests.lock .venv/bin/python -m pytest
-q tests/browser/test_screenshots.py` (writes docs/console-tasks.png and docs/console-nodes.png).
"""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import Page, expect

from argus.testing.sandbox import Sandbox, task_yaml
from argus.testing.server import wait_state

from .checks import FAST, cancel, fast_task, never_starts
from .support import SCREENSHOTS_ENV, Console, login, screenshot

pytestmark = pytest.mark.skipif(os.environ.get(SCREENSHOTS_ENV) != "1", reason=f"only with {SCREENSHOTS_ENV}=1")
LONG = {"total_training_steps": 400, "save_freq": -1, "env_vars": {"VERL_SIM_STEP_SECONDS": "0.5"}}
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"}


def test_screenshots_of_the_tasks_and_nodes_pages(console: Console, sandbox: Sandbox, page: Page):
    ana, ben, chen = console.user("ana"), console.user("ben"), console.user("chen")
    owners = {}
    try:
        # Ended: one succeeded, one failed at its first step, one cancelled while it waited.
        done = ana.api.submit(fast_task(sandbox, "sft", experiment_name="sft-tiny-lm"))["task_id"]
        failed = ben.api.submit(fast_task(sandbox, "ppo", env_vars={**FAST, "VERL_SIM_FAIL_AT_STEP": "1"}))["task_id"]
        dropped = chen.api.submit(never_starts(sandbox, experiment_name="ppo-8gpu-try"))["task_id"]
        owners.update({done: ana, failed: ben, dropped: chen})
        chen.api.cancel(dropped)
        wait_state(ana.api, done, {"SUCCEEDED"}, timeout=90)
        wait_state(ben.api, failed, FINAL, timeout=90)
        # Running: 4 GPUs, then 2 (the larger gang first, so the smaller fills the other node).
        running = [ben.api.submit(task_yaml(sandbox, "grpo", n_gpus_per_node=4, **LONG))["task_id"]]
        owners[running[0]] = ben
        wait_state(ben.api, running[0], {"RUNNING"}, timeout=90)
        running.append(ana.api.submit(task_yaml(sandbox, "ppo", n_gpus_per_node=2, **LONG))["task_id"])
        owners[running[1]] = ana
        wait_state(ana.api, running[1], {"RUNNING"}, timeout=90)
        # Waiting: 4 GPUs on one node (2 are free), and 8 on one node (no node has 8).
        waiting = [
            chen.api.submit(task_yaml(sandbox, "ppo", n_gpus_per_node=4, **LONG))["task_id"],
            ana.api.submit(never_starts(sandbox))["task_id"],
        ]
        owners.update({waiting[0]: chen, waiting[1]: ana})
        for tid in waiting:
            wait_state(owners[tid].api, tid, {"PENDING_RESOURCES"}, timeout=30)

        login(page, console.admin_token)
        page.goto("/ui/tasks")
        for tid in waiting:
            expect(page.locator(f'tr[data-task-id="{tid}"]')).to_contain_text("PENDING_RESOURCES")
        for tid in running:
            expect(page.locator(f'tr[data-task-id="{tid}"]')).to_contain_text("RUNNING")
        screenshot(page, "tasks")
        page.goto("/ui/nodes")
        expect(page.locator("div.gpu.held")).to_have_count(6)  # 4 + 2 GPUs held in the grid
        expect(page.locator("div.gpu.free")).to_have_count(2)
        screenshot(page, "nodes")
    finally:
        for tid, owner in owners.items():
            cancel(owner.api, tid)
