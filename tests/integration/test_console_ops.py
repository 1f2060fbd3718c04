"""The console's queue, nodes, usage and users pages over HTTP (the app in-process over faked
Ray jobs and a fake clock, a real database: SQLite, and PostgreSQL when
`ARGUS_TEST_DATABASE_URL` is set).

The queue lists waiting tasks per pool in the policy's order with their reasons, and running
ones with their time left; the nodes page draws one cell per GPU (free, held, draining) and
names only the caller's own tasks, and the admin's drain form changes the node as the API does
(a user gets 403); the usage chart's bars are the ledger's GPU-hours, a user's own only; the
users page is the admin's: create, disable, enable, and a token shown once. Every form needs
the session's CSRF token, no page has an inline script, and what users wrote is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser

import pytest
from api_support import Backend, World, backend, fake_ray_world, sandbox
from test_console import browser, login

from argus.testing.fakes import FakeSnapshots
from argus.testing.sandbox import Sandbox

# Two nodes of pool h20 (one named by its `argus.io/node` label; Ray says it has 1 GPU free),
# and one without a pool.
CLUSTER = FakeSnapshots(
    {"w1": 4, "w2": 4, "w3": 8},
    free={"w1": 1, "w2": 4, "w3": 8},
    labels={"w1": {"pool": "h20", "argus.io/node": "gpu-a"}, "w2": {"pool": "h20"}, "w3": {}},
)
EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)


class Tags(HTMLParser):
    """Every tag of a page with its attributes, as a browser's parser reads them."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


@dataclass
class FakeDrain:
    """Ray's drain of the fake cluster: the node is marked DRAINING."""

    cluster: FakeSnapshots

    def drain(self, node_id: str, reason: str) -> None:
        self.cluster.draining.add(node_id)


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    for w in fake_ray_world(sandbox, backend, CLUSTER):
        w.client.app.state.node_reconciler.drainer = FakeDrain(CLUSTER)
        yield w


def safe(page: str) -> str:
    """The page, once checked to carry no inline script, handler or raw `<script>` text."""
    assert not INLINE_SCRIPT.search(page), INLINE_SCRIPT.search(page)
    tags = Tags(page).tags
    assert not [(t, a) for t, attrs in tags for a, _ in attrs if a.startswith("on")]
    assert all(dict(attrs).get("src", "").startswith("/ui/static/") for t, attrs in tags if t == "script")
    assert [t for t, _ in tags].count("img") == 0
    assert "<script>alert" not in page and "<img src=x" not in page
    return page


def rows(page: str, table: str) -> list[str]:
    """The `data-task-id`s of the rows of the first table of class `table`, in order."""
    body = page.split(f'class="{table}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr data-task-id="([^"]+)"', body)


def start(world: World, task_id: str) -> None:
    """Admit `task_id` and let its Ray job run."""
    world.tick()
    world.jobs.run(f"{task_id}--a01")
    world.tick()
    state = world.get(world.admin, f"/api/v2/tasks/{task_id}").json()["state"]
    assert state == "RUNNING", state


# -- queue --------------------------------------------------------------------------------------
def test_the_queue_lists_waiting_tasks_in_policy_order_with_reasons_and_running_ones_with_time_left(world):
    alice, bob = world.new_user("qa"), world.new_user("qb")
    low = world.submit(alice, world.spec(n_gpus_per_node=16, pool="h20", priority=100))
    high = world.submit(alice, world.spec(n_gpus_per_node=16, pool="h20", priority=400))
    anywhere = world.submit(alice, world.spec(n_gpus_per_node=16))
    theirs = world.submit(bob, world.spec(n_gpus_per_node=16, pool="h20", priority=450))
    run = world.submit(alice, world.spec(n_gpus_per_node=1, pool="h20", time_limit="1h"))
    start(world, run)
    world.clock.advance(600)
    world.tick()

    a, _ = login(world, alice.token)
    page = safe(a.get("/ui/queue").text)
    assert 'hx-get="/ui/queue/body"' in page and 'hx-trigger="every 5s"' in page
    h20 = page.split('<section class="queue-pool" data-pool="h20">', 1)[1].split("</section>", 1)[0]
    # The higher priority first, though submitted later; bob's task is not named to alice.
    assert rows(h20, "queue-waiting") == [high, low]
    assert theirs not in page and bob.user_id not in page
    assert re.search(rf'data-task-id="{high}" data-position="1"', h20)
    assert h20.count("Resources: ") >= 2  # each waiting task's reason, Slurm-style
    assert rows(h20, "queue-running") == [run]
    left = int(re.search(rf'data-task-id="{run}" data-time-left-s="(\d+)"', h20).group(1))
    assert 3600 - 620 <= left <= 3600 - 600, left  # 1h limit, ~10 min in
    anyp = page.split('<section class="queue-pool" data-pool="any pool">', 1)[1].split("</section>", 1)[0]
    assert rows(anyp, "queue-waiting") == [anywhere]
    # The live part alone, as htmx asks for it.
    body = safe(a.get("/ui/queue/body").text)
    assert "<html" not in body and high in body and theirs not in body

    admin, _ = login(world, world.admin.token)
    everyone = admin.get("/ui/queue").text
    h20 = everyone.split('<section class="queue-pool" data-pool="h20">', 1)[1].split("</section>", 1)[0]
    order = rows(h20, "queue-waiting")
    assert order.index(theirs) < order.index(high) < order.index(low)  # 450, 400, 100
    for tid in (low, high, anywhere, theirs, run):
        assert world.post(alice if tid != theirs else bob, f"/api/v2/tasks/{tid}:cancel").status_code == 200


# -- nodes --------------------------------------------------------------------------------------
def cells(page: str, node: str) -> list[tuple[str, str]]:
    section = page.split(f'<section class="node" data-node="{node}"', 1)[1].split("</section>", 1)[0]
    return re.findall(r'<div class="gpu (free|held|draining)" role="listitem" title="([^"]*)"', section)


def test_the_node_grid_has_a_cell_per_gpu_and_names_only_the_callers_tasks(world):
    alice, bob = world.new_user("na"), world.new_user("nb")
    tid = world.submit(alice, world.spec(n_gpus_per_node=2, pool="h20"))
    start(world, tid)
    placed = [n for n, ids in node_tasks(world).items() if tid in ids]
    assert placed == ["w2"], placed  # gpu-a has 1 GPU free: the gang went to w2
    CLUSTER.free["w2"] = 2  # as Ray then reports it
    try:
        a, _ = login(world, alice.token)
        page = safe(a.get("/ui/nodes").text)
        assert [c for c, _ in cells(page, "gpu-a")] == ["held"] * 3 + ["free"]
        assert [c for c, _ in cells(page, "w3")] == ["free"] * 8
        w2 = cells(page, "w2")
        assert [c for c, _ in w2] == ["held", "held", "free", "free"]
        assert all(tid in title for c, title in w2 if c == "held")
        assert 'hx-get="/ui/nodes/grid"' in page
        assert "/drain" not in page and "Take offline" not in page  # no admin controls for a user
        b, _ = login(world, bob.token)
        theirs = safe(b.get("/ui/nodes/grid").text)
        assert tid not in theirs and "<html" not in theirs
        assert all("another user&#39;s task" in t for c, t in cells(theirs, "w2") if c == "held")
        admin, _ = login(world, world.admin.token)
        assert all(tid in t for c, t in cells(admin.get("/ui/nodes").text, "w2") if c == "held")
    finally:
        CLUSTER.free["w2"] = 4
        world.post(alice, f"/api/v2/tasks/{tid}:cancel")


def node_tasks(world: World) -> dict[str, list[str]]:
    nodes = world.get(world.admin, "/api/v2/nodes").json()["nodes"]
    return {n["ray"]["node_id"]: n["running_tasks"] for n in nodes if n["ray"]}


def test_the_admin_drains_a_node_through_the_form_and_a_user_cannot(world):
    user = world.new_user("nd")
    u, user_csrf = login(world, user.token)
    refused = u.post("/ui/nodes/gpu-a/drain", data={"csrf": user_csrf, "reason": "mine now"})
    assert refused.status_code == 403 and "only the admin" in refused.text
    admin, csrf = login(world, world.admin.token)
    page = admin.get("/ui/nodes").text
    assert 'action="/ui/nodes/gpu-a/drain"' in page and 'name="reason"' in page
    no_csrf = admin.post("/ui/nodes/gpu-a/drain", data={"reason": "disk swap"})
    assert no_csrf.status_code == 403 and "CSRF token missing or invalid" in no_csrf.text
    assert browser(world).post("/ui/nodes/gpu-a/drain", data={"csrf": csrf}).status_code == 401
    assert world.get(world.admin, "/api/v2/nodes/gpu-a").json()["state"] == "online"
    try:
        r = admin.post("/ui/nodes/gpu-a/drain", data={"csrf": csrf, "reason": EVIL})
        assert r.status_code == 303 and r.headers["location"] == "/ui/nodes", r.text
        node = world.get(world.admin, "/api/v2/nodes/gpu-a").json()
        assert node["state"] == "draining" and node["reason"] == EVIL
        page = safe(admin.get("/ui/nodes").text)
        assert [c for c, _ in cells(page, "gpu-a")] == ["held"] * 3 + ["draining"]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the reason, as text
        assert 'action="/ui/nodes/gpu-a/undrain"' in page
        # The user sees the drained node too, still with no controls.
        assert [c for c, _ in cells(safe(u.get("/ui/nodes").text), "gpu-a")][-1] == "draining"
        assert u.post("/ui/nodes/gpu-a/undrain", data={"csrf": user_csrf}).status_code == 403
        undrained = admin.post("/ui/nodes/gpu-a/undrain", data={"csrf": csrf})
        assert undrained.status_code == 303, undrained.text
    finally:
        CLUSTER.draining.discard("w1")
    assert world.get(world.admin, "/api/v2/nodes/gpu-a").json()["state"] == "online"
    # Offline is for a managed node: the API's answer (409) for one that joined by itself.
    off = admin.post("/ui/nodes/w3/offline", data={"csrf": csrf, "reason": "x"})
    assert off.status_code == 409 and "drain it instead" in off.text and 'role="alert"' in off.text
    assert u.post("/ui/nodes/w3/offline", data={"csrf": user_csrf}).status_code == 403


# -- usage --------------------------------------------------------------------------------------
def bars(page: str) -> list[dict[str, str]]:
    svg = re.search(r'<svg class="usage-chart"[^>]*>.*?</svg>', page, re.S).group(0)
    return [dict(re.findall(r'([a-z-]+)="([^"]*)"', m)) for m in re.findall(r'<rect class="bar" ([^>]*)>', svg)]


def test_the_usage_chart_draws_the_ledgers_gpu_hours_per_user_and_day(world):
    alice, bob = world.new_user("ua"), world.new_user("ub")
    first = world.submit(alice, world.spec(n_gpus_per_node=2, pool="h20"))
    other = world.submit(bob, world.spec(n_gpus_per_node=1, pool="h20"))
    start(world, first)
    start(world, other)
    world.clock.advance(20 * 3600)  # over a UTC midnight: the usage falls on two days
    world.jobs.finish(f"{first}--a01")
    world.jobs.finish(f"{other}--a01")
    world.tick()

    a, _ = login(world, alice.token)
    page = safe(a.get("/ui/usage").text)
    assert re.search(r'<svg class="usage-chart" role="img" aria-label="[^"]+"', page)
    mine = bars(page)
    assert mine and {b["data-user"] for b in mine} == {alice.user_id}  # only her own
    assert bob.user_id not in page
    days = world.get(alice, "/api/v2/usage", params={"group_by": "day", "from": "2027-01-01"}).json()["rows"]
    assert len(days) == 2
    assert {b["data-day"]: round(float(b["data-gpu-hours"]), 4) for b in mine} == {
        r["key"]: round(r["gpu_hours"], 4) for r in days
    }
    # Heights are to scale: GPU-hours x plot height / the axis' top.
    svg = re.search(r'<svg class="usage-chart"[^>]*>', page).group(0)
    top, plot = (
        float(re.search(r'data-y-max="([^"]+)"', svg).group(1)),
        float(re.search(r'data-plot-height="(\d+)"', svg).group(1)),
    )
    for b in mine:
        assert abs(float(b["height"]) - float(b["data-gpu-hours"]) * plot / top) < 1e-3
    assert top >= max(float(b["data-gpu-hours"]) for b in mine)
    # The table says the same.
    for r in days:
        assert re.search(rf'<tr data-day="{r["key"]}">.*?{r["gpu_hours"]:.2f}', page, re.S)

    admin, _ = login(world, world.admin.token)
    everyone = bars(admin.get("/ui/usage").text)
    assert {alice.user_id, bob.user_id} <= {b["data-user"] for b in everyone}
    # A window without usage; and a bad date, shown next to its field.
    empty = a.get("/ui/usage", params={"from": "2026-01-01", "to": "2026-01-03"}).text
    assert not bars(empty) and "No usage in this window" in empty
    bad = a.get("/ui/usage", params={"from": EVIL, "to": "2027-01-20"})
    assert bad.status_code == 400
    assert re.search(r'<span class="problem" id="from-problem" data-field="from" role="alert">must be a date', bad.text)
    safe(bad.text)
    backwards = a.get("/ui/usage", params={"from": "2027-01-10", "to": "2027-01-05"})
    assert backwards.status_code == 400 and 'data-field="to"' in backwards.text


# -- users --------------------------------------------------------------------------------------
def test_users_page_is_the_admins_and_a_token_is_shown_once(world):
    user = world.new_user("us")
    u, user_csrf = login(world, user.token)
    assert u.get("/ui/users").status_code == 403
    assert u.post("/ui/users", data={"csrf": user_csrf, "user_id": "mallory"}).status_code == 403
    admin, csrf = login(world, world.admin.token)
    page = safe(admin.get("/ui/users").text)
    assert f'<tr data-user-id="{user.user_id}">' in page
    new = world.unique_id("nu")
    assert admin.post("/ui/users", data={"user_id": new}).status_code == 403  # no CSRF token
    assert browser(world).post("/ui/users", data={"csrf": csrf, "user_id": new}).status_code == 401
    created = admin.post("/ui/users", data={"csrf": csrf, "user_id": new})
    assert created.status_code == 303, created.text
    listed = admin.get(created.headers["location"]).text
    assert re.search(rf'<tr data-user-id="{new}">.*?ACTIVE', listed, re.S) and "User created." in listed
    assert world.get(world.admin, "/api/v2/users").json()["users"][-1]["user_id"] == new or any(
        x["user_id"] == new for x in world.get(world.admin, "/api/v2/users").json()["users"]
    )
    # Bad ids: the form again, the problem next to the field, what was typed kept (escaped).
    bad = admin.post("/ui/users", data={"csrf": csrf, "user_id": EVIL})
    assert bad.status_code == 400
    assert re.search(
        r'<span class="problem" id="user_id-problem" data-field="user_id" role="alert">user_id must be', bad.text
    )
    safe(bad.text)
    taken = admin.post("/ui/users", data={"csrf": csrf, "user_id": new})
    assert taken.status_code == 400 and "exists already" in taken.text
    reserved = admin.post("/ui/users", data={"csrf": csrf, "user_id": "admin"})
    assert reserved.status_code == 400 and "reserved" in reserved.text

    issued = admin.post(f"/ui/users/{new}/tokens", data={"csrf": csrf})
    assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
    token = re.search(r'<code id="new-token">([^<]+)</code>', issued.text).group(1)
    assert world.get(type(user)(new, token), "/api/v2/me").json() == {"user_id": new, "is_admin": False}
    assert token not in admin.get("/ui/users").text and 'id="new-token"' not in admin.get("/ui/users").text
    fresh, _ = login(world, token)

    disabled = admin.post(f"/ui/users/{new}/disable", data={"csrf": csrf})
    assert disabled.status_code == 303
    assert re.search(rf'<tr data-user-id="{new}">.*?DISABLED', admin.get("/ui/users").text, re.S)
    assert fresh.get("/ui/tasks").status_code == 303  # their console session ended
    assert world.get(type(user)(new, token), "/api/v2/me").status_code == 401
    refused = admin.post(f"/ui/users/{new}/tokens", data={"csrf": csrf})
    assert refused.status_code == 409 and "disabled" in refused.text
    enabled = admin.post(f"/ui/users/{new}/enable", data={"csrf": csrf})
    assert enabled.status_code == 303
    assert re.search(rf'<tr data-user-id="{new}">.*?ACTIVE', admin.get("/ui/users").text, re.S)
    unknown = admin.post("/ui/users/nobody_here/disable", data={"csrf": csrf})
    assert unknown.status_code == 404 and "no user nobody_here" in unknown.text
    assert u.post(f"/ui/users/{new}/disable", data={"csrf": user_csrf}).status_code == 403


def test_every_ops_page_needs_a_login_and_carries_the_csp(world):
    for path in ("/ui/queue", "/ui/queue/body", "/ui/nodes", "/ui/nodes/grid", "/ui/usage", "/ui/users"):
        r = browser(world).get(path)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login", path
    admin, _ = login(world, world.admin.token)
    for path in ("/ui/queue", "/ui/nodes", "/ui/usage", "/ui/users"):
        r = admin.get(path)
        assert r.status_code == 200, (path, r.text)
        assert "script-src 'self'" in r.headers["content-security-policy"]
        safe(r.text)
        assert 'aria-current="page"' in r.text


def test_queue_and_nodes_pages_say_so_when_ray_cannot_be_read(world):
    admin, _ = login(world, world.admin.token)
    CLUSTER.down = True
    try:
        for path in ("/ui/queue", "/ui/nodes"):
            r = admin.get(path)
            assert r.status_code == 200 and 'role="alert">Ray cannot be read: cannot reach the GCS' in r.text, path
    finally:
        CLUSTER.down = False
