"""The nodes page in a real browser against a real `argus server` on the real local Ray cluster.

The admin drains the node a running task holds, through the page's form, with a reason that is
markup (`<script>`, `<img onerror>`): the grid shows the node draining (its held GPU held, its
free ones `draining`) and the reason as text, and no script runs; Undrain lifts the hold, and
once the task ends the node is back online with every GPU free, as the cluster was found. A
user sees the grid but no admin control, and a POST of their own CSRF token to the drain,
undrain and offline URLs is refused with 403, changing nothing.
Run under the shared lock: `flock /tmp/argus-ray-tests.lock .venv/bin/python -m pytest -q
tests/browser`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from argus.client.sdk import ArgusAPIError, ArgusClient
from argus.testing.sandbox import Sandbox, task_yaml
from argus.testing.server import wait_state

from .checks import IMG, SCRIPT, assert_nothing_ran, cancel, csrf_token, watch
from .support import Console, ConsoleUser, login

ADMIN_ONLY = "only the admin drains, undrains or takes nodes offline"
GPUS_PER_NODE = 4
BACK_TIMEOUT_S = 90.0


def nodes_by_id(admin: ArgusClient) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in admin.nodes()["nodes"]}


def as_found(admin: ArgusClient, found: dict[str, dict[str, Any]]) -> bool:
    """Every node listed at the start is online again in Ray, not draining, all GPUs free."""
    now = nodes_by_id(admin)
    for name in found:
        n = now.get(name)
        ray = n and n["ray"]
        if not ray or n["state"] != "online" or not ray["alive"] or ray["draining"]:
            return False
        if ray["gpus_free"] != ray["gpus_total"] or n["reason"]:
            return False
    return True


def wait_as_found(admin: ArgusClient, found: dict[str, dict[str, Any]]) -> None:
    deadline = time.monotonic() + BACK_TIMEOUT_S
    while not as_found(admin, found):
        assert time.monotonic() < deadline, f"the nodes are not back as found: {nodes_by_id(admin)}"
        time.sleep(0.5)


@pytest.fixture
def busy_node(console: Console, sandbox: Sandbox) -> Iterator[tuple[str, ConsoleUser, str]]:
    """A node where a user's task holds 1 GPU and trains (a drained node keeps running it, so
    Ray keeps the node, draining, until it ends); afterwards every node is as found: the task
    cancelled, the node undrained, back in Ray with its GPUs free."""
    admin = console.admin
    found = nodes_by_id(admin)
    assert as_found(admin, found), found
    kim = console.user("kim")
    slow = {"VERL_SIM_STEP_SECONDS": "0.5"}
    tid = kim.api.submit(
        task_yaml(sandbox, "ppo", n_gpus_per_node=1, total_training_steps=400, save_freq=-1, env_vars=slow)
    )["task_id"]
    try:
        wait_state(kim.api, tid, {"RUNNING"}, timeout=60)
        deadline = time.monotonic() + 60
        while "step:1 " not in kim.api.logs(tid):  # its worker holds the GPU
            assert time.monotonic() < deadline, "the task never started training"
            time.sleep(0.3)
        # Where Ray placed its GPU (the node Ray keeps while the task runs there).
        held = [name for name, n in nodes_by_id(admin).items() if n["ray"]["gpus_free"] == GPUS_PER_NODE - 1]
        assert len(held) == 1, [(k, n["running_tasks"], n["ray"]) for k, n in nodes_by_id(admin).items()]
        yield held[0], kim, tid
    finally:
        cancel(kim.api, tid)
        for name, n in nodes_by_id(admin).items():
            if n["state"] == "draining":
                try:
                    admin.undrain_node(name)
                except ArgusAPIError as exc:
                    print(f"undrain {name}: {exc}")
        wait_as_found(admin, found)


def test_the_admin_drains_a_node_the_grid_shows_it_and_undrains_it(
    console: Console, page: Page, busy_node: tuple[str, ConsoleUser, str]
):
    name, kim, tid = busy_node
    reason = f"disk swap {SCRIPT} {IMG}"
    login(page, console.admin_token)
    page.goto("/ui/nodes")
    seen = watch(page)
    node = page.locator(f'section.node[data-node="{name}"]')
    expect(node).to_have_attribute("data-state", "online")
    expect(node.locator("div.gpu.held")).to_have_count(1)
    expect(node.locator("div.gpu.free")).to_have_count(GPUS_PER_NODE - 1)
    node.get_by_label("Reason").first.fill(reason)
    with page.expect_navigation():
        node.get_by_role("button", name="Drain").click()

    node = page.locator(f'section.node[data-node="{name}"]')
    expect(node).to_have_attribute("data-state", "draining")
    expect(node.locator(".badge")).to_have_text("draining")
    expect(node.locator("div.gpu.held")).to_have_count(1)  # its task runs on
    expect(node.locator("div.gpu.draining")).to_have_count(GPUS_PER_NODE - 1)
    expect(node.locator("div.gpu.free")).to_have_count(0)
    expect(node.locator("p.node-reason")).to_have_text(reason)  # the markup as text
    assert node.locator("p.node-reason script, p.node-reason img").count() == 0
    others = page.locator(f'section.node:not([data-node="{name}"])')
    expect(others.locator("div.gpu.draining")).to_have_count(0)
    assert nodes_by_id(console.admin)[name]["state"] == "draining"
    assert kim.api.task(tid)["state"] == "RUNNING"
    # The grid's live part is swapped in again by htmx: still text, still nothing ran.
    with page.expect_response(lambda r: r.url.endswith("/ui/nodes/grid")):
        pass
    expect(page.locator(f'section.node[data-node="{name}"] p.node-reason')).to_have_text(reason)
    assert_nothing_ran(page, seen)

    with page.expect_navigation():
        node.get_by_role("button", name="Undrain").click()
    # Argus's hold is lifted (no reason any more); Ray finishes its drain once the task ends,
    # and the node's agent then joins again, online.
    expect(page.locator(f'section.node[data-node="{name}"] p.node-reason')).to_have_count(0)
    cancel(kim.api, tid)
    deadline = time.monotonic() + BACK_TIMEOUT_S
    while nodes_by_id(console.admin).get(name, {}).get("state") != "online":
        assert time.monotonic() < deadline, nodes_by_id(console.admin)
        time.sleep(0.5)
    page.reload()
    node = page.locator(f'section.node[data-node="{name}"]')
    expect(node).to_have_attribute("data-state", "online", timeout=BACK_TIMEOUT_S * 1000)
    expect(node.locator("div.gpu.free")).to_have_count(GPUS_PER_NODE, timeout=30_000)
    assert_nothing_ran(page, seen)


def test_a_user_sees_no_admin_controls_and_cannot_post_to_them(console: Console, page: Page):
    lee = console.user("lee")
    before = nodes_by_id(console.admin)
    login(page, lee.token)
    page.goto("/ui/nodes")
    expect(page.locator("section.node")).to_have_count(len(before))
    expect(page.locator("div.gpu")).to_have_count(GPUS_PER_NODE * len(before))
    expect(page.locator(".node-actions")).to_have_count(0)
    expect(page.locator("main form")).to_have_count(0)
    for button in ("Drain", "Undrain", "Take offline"):
        expect(page.get_by_role("button", name=button)).to_have_count(0)
    token = csrf_token(page)
    name = next(iter(before))
    for action, form in (("drain", {"reason": "mine now"}), ("undrain", {}), ("offline", {"reason": "mine now"})):
        posted = page.request.post(f"/ui/nodes/{name}/{action}", form={"csrf": token, **form}, max_redirects=0)
        assert posted.status in (403, 404) and ADMIN_ONLY in posted.text(), (action, posted.status, posted.text())
    assert nodes_by_id(console.admin)[name]["state"] == before[name]["state"] == "online"
