"""The console's task pages over HTTP (the app in-process over faked Ray jobs and a fake clock,
a real database: SQLite, and PostgreSQL when `ARGUS_TEST_DATABASE_URL` is set).

The task list filters by state, workload and (for the admin) user in the store, a page at a
time, as the API does; a task's page is "Task not found" for another user's task exactly as
for one that does not exist; cancel takes a confirmation page and the CSRF token; the priority
form is the admin's; the submit form goes through the API's own checks and stores nothing
when a field is wrong; the driver log streams as server-sent events, each line HTML-escaped,
ending once the attempt ended; markup users wrote is text everywhere.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Backend, World, backend, fake_ray_world, sandbox
from fastapi.testclient import TestClient

from argus.domain.durations import format_duration
from argus.service.ui import routes_task, routes_tasks
from argus.testing.sandbox import Sandbox

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]+)"')


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    yield from fake_ray_world(sandbox, backend)


@pytest.fixture(autouse=True)
def idle_cluster(world: World) -> Iterator[None]:
    """Each test starts on an idle cluster: the tasks a test leaves waiting or running are
    cancelled after it (the scheduler would otherwise give them the next test's GPUs)."""
    yield
    for t in world.list_all(world.admin, state="QUEUED,PENDING_RESOURCES,SUBMITTED,RUNNING"):
        world.post(world.admin, f"/api/v2/tasks/{t['task_id']}:cancel")
    world.tick()


def login(world: World, token: str) -> tuple[TestClient, str]:
    """A browser of its own logged in through the form; returns it and its CSRF token."""
    b = TestClient(world.client.app, base_url="http://testserver", follow_redirects=False)
    form = b.get("/ui/login")
    r = b.post("/ui/login", data={"token": token, "csrf": CSRF_RE.search(form.text).group(1)})
    assert r.status_code == 303, r.text
    page = b.get("/ui/tasks")
    return b, CSRF_RE.search(page.text).group(1)


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-task-id="([^"]+)"', html)


def state_of(world: World, who, tid: str) -> str:
    return world.get(who, f"/api/v2/tasks/{tid}").json()["state"]


def run_to_end(world: World, who, log: str, **fields) -> str:
    """A task whose one attempt ran, printed `log` and succeeded."""
    tid = world.submit(who, world.spec(**fields))
    world.tick()
    sid = f"{tid}--a01"
    world.jobs.run(sid, log=log)
    world.tick()
    world.jobs.finish(sid)
    world.tick()
    world.tick()
    assert state_of(world, who, tid) == "SUCCEEDED"
    return tid


def test_the_list_filters_by_state_workload_and_user_in_pages(world, monkeypatch):
    alice, bob = world.new_user("fa"), world.new_user("fb")
    ppo = [world.submit(alice) for _ in range(3)]
    grpo = [world.submit(alice, world.spec("grpo")) for _ in range(2)]
    assert world.post(alice, f"/api/v2/tasks/{ppo[0]}:cancel").status_code == 200
    theirs = world.submit(bob)
    a, _ = login(world, alice.token)
    assert row_ids(a.get("/ui/tasks", params={"workload": "grpo"}).text) == grpo[::-1]
    assert row_ids(a.get("/ui/tasks", params={"state": "CANCELED"}).text) == [ppo[0]]
    assert row_ids(a.get("/ui/tasks", params={"state": "QUEUED", "workload": "ppo"}).text) == ppo[:0:-1]
    bad = a.get("/ui/tasks", params={"workload": "dpo"})
    assert bad.status_code == 400 and "dpo" in bad.text, bad.text
    assert a.get("/ui/tasks", params={"user": bob.user_id}).status_code == 403
    # Newest first, a page at a time; the next page keeps the filters and repeats nothing.
    monkeypatch.setattr(routes_tasks, "PAGE", 2)
    seen: list[str] = []
    url = "/ui/tasks?workload=ppo"
    while url:
        page = a.get(url).text
        seen += row_ids(page)
        older = re.search(r'<a href="([^"]+)">Older tasks</a>', page)
        url = older.group(1).replace("&amp;", "&") if older else ""
        assert not url or "workload=ppo" in url
    assert seen == ppo[::-1]
    # The admin: everyone's, or one user's.
    admin, _ = login(world, world.admin.token)
    monkeypatch.setattr(routes_tasks, "PAGE", 50)
    mine = row_ids(admin.get("/ui/tasks", params={"user": alice.user_id}).text)
    assert mine == (ppo + grpo)[::-1] and theirs not in mine
    page = admin.get("/ui/tasks", params={"user": bob.user_id, "workload": "ppo"}).text
    assert row_ids(page) == [theirs] and 'id="user"' in page
    assert 'id="user"' not in a.get("/ui/tasks").text  # the user filter is the admin's


def test_the_api_lists_by_workload_and_the_admin_by_user(world):
    alice, bob = world.new_user("wa"), world.new_user("wb")
    grpo = world.submit(alice, world.spec("grpo"))
    ppo = world.submit(alice)
    world.submit(bob, world.spec("grpo"))
    got = world.get(alice, "/api/v2/tasks", params={"workload": "grpo"}).json()
    assert [t["task_id"] for t in got["tasks"]] == [grpo] and "waited_s" not in got["tasks"][0]
    by_admin = world.get(world.admin, "/api/v2/tasks", params={"user": alice.user_id}).json()["tasks"]
    assert [t["task_id"] for t in by_admin] == [ppo, grpo]
    assert [t["task_id"] for t in world.list_all(alice, user=alice.user_id)] == [ppo, grpo]
    other = world.get(alice, "/api/v2/tasks", params={"user": bob.user_id})
    assert other.status_code == 403 and "admin" in other.json()["message"], other.text
    bad = world.get(alice, "/api/v2/tasks", params={"workload": "dpo"})
    assert bad.status_code == 400 and bad.json()["problems"][0]["field"] == "workload", bad.text
    bad_user = world.get(world.admin, "/api/v2/tasks", params={"user": "Bad User"})
    assert bad_user.status_code == 400 and bad_user.json()["problems"][0]["field"] == "user", bad_user.text


def test_rows_show_waited_and_ran(world):
    who = world.new_user("wr")
    done = run_to_end(world, who, "ok\n")
    waiting = world.submit(who)
    b, _ = login(world, who.token)
    page = b.get("/ui/tasks").text
    cells = dict(re.findall(r'<tr data-task-id="([^"]+)">.*?<td class="times">([^<]*)</td>', page, re.S))
    assert cells[done] == "1s / 2s", cells  # the fake clock moves 1 s per scheduler pass
    assert cells[waiting].endswith("/ -"), cells
    # A retried task: the list and the task's own page count its run time alike (the ledger).
    retried = world.submit(who)
    world.tick()
    world.jobs.lose_all()  # the head restarted and forgot the job: attempt 2 starts
    world.tick()
    world.clock.advance(30)
    world.jobs.run(f"{retried}--a02")
    world.tick()
    world.jobs.finish(f"{retried}--a02")
    world.tick()
    world.tick()
    detail = world.get(who, f"/api/v2/tasks/{retried}").json()
    assert detail["attempts"] == 2 and detail["state"] == "SUCCEEDED", detail
    page = b.get("/ui/tasks").text
    cells = dict(re.findall(r'<tr data-task-id="([^"]+)">.*?<td class="times">([^<]*)</td>', page, re.S))
    waited, ran = cells[retried].split(" / ")
    assert ran == format_duration(detail["run_s"]) and waited == format_duration(detail["wait_s"]), cells[retried]


def test_another_users_task_is_not_found_like_a_task_that_does_not_exist(world):
    alice, bob = world.new_user("na"), world.new_user("nb")
    tid = world.submit(alice)
    b, csrf = login(world, bob.token)
    missing = tid[:-4] + ("0000" if not tid.endswith("0000") else "1111")
    for task in (tid, missing, "junk"):
        for suffix in ("", "/live", "/log/panel", "/log", "/log/stream", "/cancel"):
            r = b.get(f"/ui/tasks/{task}{suffix}")
            assert r.status_code == 404 and "Task not found" in r.text and tid not in r.text, (suffix, r.text)
        r = b.post(f"/ui/tasks/{task}/cancel", data={"csrf": csrf})
        assert r.status_code == 404 and "Task not found" in r.text
    assert state_of(world, alice, tid) == "QUEUED"


def test_a_waiting_task_shows_its_reason_and_polls_until_final(world):
    who = world.new_user("pw")
    tid = world.submit(who, world.spec(n_gpus_per_node=8))  # no node has 8 GPUs
    world.tick()
    b, csrf = login(world, who.token)
    page = b.get(f"/ui/tasks/{tid}").text
    assert 'id="task-state" class="badge state-PENDING_RESOURCES">PENDING_RESOURCES<' in page
    reason = re.search(r'id="pending-reason">([^<]+)<', page).group(1)
    assert reason.startswith("Resources"), reason
    assert f'hx-get="/ui/tasks/{tid}/live" hx-trigger="every 2s"' in page
    assert f'hx-get="/ui/tasks/{tid}/log/panel"' in page  # no attempt yet: the log section waits
    assert "n_gpus_per_node: 8" in page and "Time limit" in page
    live = b.get(f"/ui/tasks/{tid}/live").text
    assert 'id="task-state"' in live and "every 2s" in live
    assert b.post(f"/ui/tasks/{tid}/cancel", data={"csrf": csrf}).status_code == 303
    final = b.get(f"/ui/tasks/{tid}/live").text
    assert 'state-CANCELED">CANCELED<' in final and "hx-trigger" not in final and "pending-reason" not in final


def test_cancel_asks_first_and_needs_the_csrf_token(world):
    who = world.new_user("cc")
    tid = world.submit(who)
    b, csrf = login(world, who.token)
    assert f'action="/ui/tasks/{tid}/cancel"' in b.get(f"/ui/tasks/{tid}").text
    ask = b.get(f"/ui/tasks/{tid}/cancel")
    assert ask.status_code == 200 and f"Cancel task {tid}?" in ask.text and "Yes, cancel" in ask.text
    assert f'method="post" action="/ui/tasks/{tid}/cancel"' in ask.text and csrf in ask.text
    refused = b.post(f"/ui/tasks/{tid}/cancel", data={"csrf": "0" * 64})
    assert refused.status_code == 403 and "CSRF token missing or invalid" in refused.text
    assert b.post(f"/ui/tasks/{tid}/cancel").status_code == 403
    assert state_of(world, who, tid) == "QUEUED"
    done = b.post(f"/ui/tasks/{tid}/cancel", data={"csrf": csrf})
    assert done.status_code == 303 and done.headers["location"] == f"/ui/tasks/{tid}"
    assert state_of(world, who, tid) == "CANCELED"
    again = b.get(f"/ui/tasks/{tid}/cancel")
    assert "already ended" in again.text and "Yes, cancel" not in again.text
    assert b.post(f"/ui/tasks/{tid}/cancel", data={"csrf": csrf}).status_code == 409


def test_the_priority_form_is_the_admins(world):
    who = world.new_user("pr")
    tid = world.submit(who)
    b, csrf = login(world, who.token)
    assert "/priority" not in b.get(f"/ui/tasks/{tid}").text
    refused = b.post(f"/ui/tasks/{tid}/priority", data={"csrf": csrf, "priority": "900"})
    assert refused.status_code == 403 and "admin" in refused.text
    admin, admin_csrf = login(world, world.admin.token)
    assert f'action="/ui/tasks/{tid}/priority"' in admin.get(f"/ui/tasks/{tid}").text
    bad = admin.post(f"/ui/tasks/{tid}/priority", data={"csrf": admin_csrf, "priority": "5000"})
    assert bad.status_code == 400 and "priority" in bad.text
    assert admin.post(f"/ui/tasks/{tid}/priority", data={"priority": "700"}).status_code == 403
    ok = admin.post(f"/ui/tasks/{tid}/priority", data={"csrf": admin_csrf, "priority": "700"})
    assert ok.status_code == 303 and ok.headers["location"] == f"/ui/tasks/{tid}"
    assert world.get(who, f"/api/v2/tasks/{tid}").json()["priority"] == 700
    assert 'id="task-priority">700<' in b.get(f"/ui/tasks/{tid}").text


def test_submit_shows_problems_by_field_and_stores_nothing(world):
    who = world.new_user("sf")
    b, csrf = login(world, who.token)
    form = b.get("/ui/submit").text
    assert '<label for="spec">TaskSpec</label>' in form and 'name="spec"' in form
    assert 'type="file"' in form and 'name="file"' in form and ">Submit</button>" in form
    before = world.backend.count("tasks")
    text = world.spec(nnodes=0, experiment_name=EVIL)
    bad = b.post("/ui/submit", data={"csrf": csrf, "spec": text})
    assert bad.status_code == 400, bad.text
    assert '<ul class="problems"' in bad.text and '<li data-field="nnodes">' in bad.text, bad.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in bad.text and "<script>alert" not in bad.text  # kept, as text
    empty = b.post("/ui/submit", data={"csrf": csrf, "spec": "  "})
    assert empty.status_code == 400 and '<li data-field="spec">' in empty.text
    refused = b.post("/ui/submit", data={"spec": world.spec()})
    assert refused.status_code == 403
    assert world.backend.count("tasks") == before


def test_submit_by_paste_or_upload_goes_to_the_task_page_with_its_warnings(world):
    who = world.new_user("ss")
    b, csrf = login(world, who.token)
    pasted = b.post("/ui/submit", data={"csrf": csrf, "spec": world.spec()})
    assert pasted.status_code == 303, pasted.text
    tid = re.fullmatch(r"/ui/tasks/([^/?]+)", pasted.headers["location"]).group(1)
    assert state_of(world, who, tid) == "QUEUED"
    spec = world.spec(env_vars={"MY_API_KEY": "hunter2-value", "VERL_SIM_STEP_SECONDS": "0.2"})
    uploaded = b.post("/ui/submit", data={"csrf": csrf, "spec": ""}, files={"file": ("t.yaml", spec.encode())})
    assert uploaded.status_code == 303, uploaded.text
    page = b.get(uploaded.headers["location"]).text
    assert "env_vars.MY_API_KEY looks like a credential" in page and "hunter2-value" not in page
    bad_file = b.post("/ui/submit", data={"csrf": csrf}, files={"file": ("t.yaml", b"\xff\xfe")})
    assert bad_file.status_code == 400 and '<li data-field="file">' in bad_file.text


def test_the_log_streams_escaped_lines_and_ends_with_the_attempt(world):
    who = world.new_user("ls")
    tid = run_to_end(world, who, f"<b>x</b>\n{EVIL}\n")
    b, _ = login(world, who.token)
    page = b.get(f"/ui/tasks/{tid}").text
    assert f'sse-connect="/ui/tasks/{tid}/log/stream?attempt=1"' in page and 'id="log"' in page
    assert 'sse-swap="line"' in page and 'sse-close="end"' in page
    assert f'href="/ui/tasks/{tid}/log?attempt=1"' in page
    r = b.get(f"/ui/tasks/{tid}/log/stream", params={"attempt": "1"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    size = len(f"<b>x</b>\n{EVIL}\n")
    assert r.text.startswith(f"event: line\nid: {size}\ndata: &lt;b&gt;x&lt;/b&gt;\ndata: &lt;script&gt;alert(1)")
    assert "<b>" not in r.text and "<script>" not in r.text
    assert r.text.endswith("event: end\ndata: \n\n") and r.text.count("event: line") == 1
    down = b.get(f"/ui/tasks/{tid}/log", params={"attempt": "1"})
    assert down.status_code == 200 and down.headers["content-type"].startswith("text/plain")
    assert down.headers["content-disposition"] == f'attachment; filename="{tid}-attempt-1.log"'
    assert down.text == f"<b>x</b>\n{EVIL}\n"
    assert b.get(f"/ui/tasks/{tid}/log/stream", params={"attempt": "2"}).status_code == 404
    # A browser that reconnects says how much it has: it gets only the rest.
    resumed = b.get(f"/ui/tasks/{tid}/log/stream", params={"attempt": "1"}, headers={"Last-Event-ID": "9"})
    assert resumed.text.startswith(f"event: line\nid: {size}\ndata: &lt;script&gt;"), resumed.text


def test_the_log_of_a_running_attempt_follows_new_text_then_ends(world, monkeypatch):
    monkeypatch.setattr(routes_task, "LOG_POLL_S", 0.05)
    who = world.new_user("lf")
    tid = world.submit(who)
    world.tick()
    sid = f"{tid}--a01"
    world.jobs.run(sid, log="step 1\n")
    world.tick()
    b, _ = login(world, who.token)
    messages: list[str] = []
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the stream did not end"))
    signal.alarm(30)
    try:
        with b.stream("GET", f"/ui/tasks/{tid}/log/stream") as r:
            assert r.status_code == 200
            block: list[str] = []
            for line in r.iter_lines():
                if line:
                    block.append(line)
                    continue
                messages.append("\n".join(block))
                block = []
                if len(messages) == 1:  # the text so far came; now the job prints more and ends
                    world.jobs.finish(sid, log="<i>done</i>\n")
                    world.tick()
                    world.tick()
    finally:
        signal.alarm(0)
    assert messages[0] == "event: line\nid: 7\ndata: step 1\ndata: "
    assert messages[1] == "event: line\nid: 19\ndata: &lt;i&gt;done&lt;/i&gt;\ndata: "
    assert messages[-1] == "event: end\ndata: " and len(messages) == 3


def test_attempt_evidence_events_and_checkpoints_show_as_text(world):
    who = world.new_user("ev")
    tid = world.submit(who, world.spec(experiment_name=EVIL))
    world.tick()
    sid = f"{tid}--a01"
    job_root = Path(world.get(who, f"/api/v2/tasks/{tid}/attempts").json()["attempts"][0]["job_root"])
    for step in ("global_step_10", "global_step_2"):
        (job_root / "checkpoints" / step).mkdir(parents=True, exist_ok=True)
    (job_root / "checkpoints" / "global_step_x").mkdir()
    world.jobs.run(sid)
    world.tick()
    world.jobs.fail(sid, message=f"RuntimeError: {EVIL}")
    world.tick()
    world.tick()
    b, _ = login(world, who.token)
    page = b.get(f"/ui/tasks/{tid}").text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "RuntimeError: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "experiment_name: &#39;&lt;script&gt;" in page or "experiment_name: &lt;script&gt;" in page
    steps = re.findall(r'<td class="num">(\d+)</td><td><code>[^<]*global_step_\d+</code>', page)
    assert steps == ["2", "10"], steps
    assert "global_step_x" not in page
    assert 'state-RUNNING">RUNNING<' in page  # the timeline


def test_a_followed_log_ends_once_its_session_is_gone(world, monkeypatch):
    monkeypatch.setattr(routes_task, "LOG_POLL_S", 0.02)
    who = world.new_user("lg")
    tid = world.submit(who)
    world.tick()
    world.jobs.run(f"{tid}--a01", log="step 1\n")
    world.tick()
    b, csrf = login(world, who.token)
    other, _ = login(world, who.token)  # logs out below; the stream's own session ends with the user
    messages: list[str] = []
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the stream outlived its session"))
    signal.alarm(30)
    try:
        with b.stream("GET", f"/ui/tasks/{tid}/log/stream") as r:
            block: list[str] = []
            for line in r.iter_lines():
                if line:
                    block.append(line)
                    continue
                messages.append("\n".join(block))
                block = []
                if len(messages) == 1:  # the text so far came; now the user is disabled
                    assert world.post(world.admin, f"/api/v2/users/{who.user_id}:disable").status_code == 200
    finally:
        signal.alarm(0)
    assert messages[-1] == "event: end\ndata: " and len(messages) == 2
    assert other.get("/ui/tasks").status_code == 303
    world.jobs.finish(f"{tid}--a01")
    world.tick()


def test_numbers_in_other_scripts_are_refused_not_a_server_error(world):
    who = world.new_user("nd")
    tid = world.submit(who)
    b, _ = login(world, who.token)
    assert b.get(f"/ui/tasks/{tid}", params={"attempt": "²"}).status_code == 200  # the latest is shown
    admin, csrf = login(world, world.admin.token)
    r = admin.post(f"/ui/tasks/{tid}/priority", data={"priority": "²", "csrf": csrf})
    assert r.status_code == 400 and "priority" in r.text


def test_a_long_log_streams_its_end_and_points_to_the_download(world, monkeypatch):
    monkeypatch.setattr(routes_task, "FIRST_CHUNK_CHARS", 20)
    who = world.new_user("ll")
    tid = run_to_end(world, who, "0123456789" * 5 + "\nlast line\n")
    b, _ = login(world, who.token)
    r = b.get(f"/ui/tasks/{tid}/log/stream", params={"attempt": "1"})
    events = r.text.split("\n\n")
    assert events[0] == "event: line\ndata: [41 earlier characters: download the log for all of it]"
    assert events[1] == "event: line\nid: 61\ndata: 123456789\ndata: last line\ndata: "
    assert events[2] == "event: end\ndata: "
