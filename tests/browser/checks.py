"""What the console's browser tests check on a page, and the tasks they submit.

`SCRIPT` and `IMG` are the markup a hostile user writes where the console shows their text;
`watch(page)` collects, from then on, every script error and dialog of the page, and
`assert_nothing_ran(page, seen)` that neither payload ran (`window.__pwned` unset, no `<img
src=x>` made, no dialog). `csrf_token(page)` is the session's CSRF token as the page's forms
carry it, for a POST made by hand through `page.request` (which shares the page's cookies).
`fast_task` and `never_starts` are TaskSpecs for the session's sandbox: a run that ends in
seconds, and one that asks for 8 GPUs on one node (nodes have 4), so it waits with a reason;
`cancel(client, tid)` ends what a test leaves behind (a task that ended already is left so).
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

from argus.client.sdk import ArgusAPIError, ArgusClient
from argus.testing.sandbox import Sandbox, task_yaml

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
FAST = {"VERL_SIM_STEP_SECONDS": "0"}


def watch(page: Page) -> list[str]:
    """The list that collects the page's script errors and dialogs from now on."""
    seen: list[str] = []
    page.on("pageerror", lambda exc: seen.append(f"pageerror {exc}"))
    page.on("dialog", lambda dialog: seen.append(f"dialog {dialog.message}"))
    return seen


def assert_nothing_ran(page: Page, seen: list[str]) -> None:
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert seen == []


def csrf_token(page: Page) -> str:
    """The session's CSRF token, from the open page's forms (the nav's `Log out` has one)."""
    token = page.locator("input[name='csrf']").first.get_attribute("value")
    assert token, page.content()
    return token


def fast_task(sandbox: Sandbox, workload: str = "ppo", marker: str = "sim-a", **fields: Any) -> str:
    """A run of 2 instant steps on 1 GPU, without checkpoints: SUCCEEDED in seconds."""
    spec: dict[str, Any] = {
        "n_gpus_per_node": 1,
        "total_training_steps": 2,
        "save_freq": -1,
        "env_vars": FAST,
        **fields,
    }
    return task_yaml(sandbox, workload, marker, **spec)


def never_starts(sandbox: Sandbox, **fields: Any) -> str:
    """8 GPUs on one node: no node has them, so it waits (`PENDING_RESOURCES`) with a reason."""
    return task_yaml(sandbox, "ppo", n_gpus_per_node=8, **fields)


def cancel(client: ArgusClient, tid: str) -> None:
    """Cancel `tid` unless it ended already (the API answers 409 then)."""
    try:
        client.cancel(tid)
    except ArgusAPIError as exc:
        if exc.status != 409:
            raise
