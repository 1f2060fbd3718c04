"""The scheduling fields of the API: priority and time limit at submission, the admin's
`:priority` route, and what a waiting task shows. Over SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import (
    Api,
    AppFactory,
    backend,
)

from argus.testing.sandbox import Sandbox, prepare


@pytest.fixture(scope="module")
def api(tmp_path_factory, backend) -> Iterator[Api]:
    sandbox: Sandbox = prepare(tmp_path_factory.mktemp("shared"))
    factory = AppFactory(sandbox, backend)
    try:
        yield Api(factory(), sandbox, backend)
    finally:
        factory.close_all()


def test_priority_and_time_limit_are_stored_and_shown(api):
    user = api.new_user()
    tid = api.submit(user, api.spec(priority=300, time_limit="1h30m"))
    task = api.get(user, f"/api/v2/tasks/{tid}").json()
    assert (task["priority"], task["time_limit_s"]) == (300, 5400)
    # Raising a priority above the default is the admin's to do.
    r = api.post_yaml(user, api.spec(priority=700))
    assert r.status_code == 400 and "is for the admin" in r.json()["problems"][0]["message"]
    boss = api.post_yaml(api.admin, api.spec(priority=700))
    assert boss.status_code == 201
    assert api.get(api.admin, f"/api/v2/tasks/{boss.json()['task_id']}").json()["priority"] == 700
    plain = api.get(user, f"/api/v2/tasks/{api.submit(user, api.spec())}").json()
    assert (plain["priority"], plain["time_limit_s"]) == (500, 24 * 3600)  # the defaults


def test_time_limit_over_the_maximum_and_bad_values_are_400(api):
    user = api.new_user()
    for value, words in (
        ("8d", "at most 7d"),
        ("soon", "not a duration"),
        (0, "more than 0"),
        (10**400, "at most 365 days"),
    ):
        r = api.post_yaml(user, api.spec(time_limit=value))
        assert r.status_code == 400, r.text
        [p] = [p for p in r.json()["problems"] if p["field"] == "time_limit"]
        assert words in p["message"]
    r = api.post_yaml(user, api.spec(priority=1001))
    assert r.status_code == 400 and r.json()["problems"][0]["field"] == "priority"


def test_admin_changes_a_waiting_tasks_priority_with_an_event(api, backend):
    user = api.new_user()
    tid = api.submit(user, api.spec())
    r = api.client.post(f"/api/v2/tasks/{tid}:priority", json={"priority": 900}, headers=api.admin.headers)
    assert r.status_code == 200 and r.json() == {"task_id": tid, "priority": 900}
    assert api.get(user, f"/api/v2/tasks/{tid}").json()["priority"] == 900
    [event] = backend.rows("SELECT reason FROM task_events WHERE task_id = :t AND reason LIKE 'priority%'", t=tid)
    assert event["reason"] == "priority 500 -> 900 by admin"
    # Users may not; bad bodies are 400 naming the field; a finished task is 409.
    r = api.client.post(f"/api/v2/tasks/{tid}:priority", json={"priority": 1}, headers=user.headers)
    assert r.status_code == 403
    for body in ({"priority": 1001}, {"priority": "high"}, {}, {"priority": 5, "x": 1}, [5]):
        r = api.client.post(f"/api/v2/tasks/{tid}:priority", json=body, headers=api.admin.headers)
        assert r.status_code == 400 and r.json()["problems"][0]["field"] == "priority", body
    api.client.post(f"/api/v2/tasks/{tid}:cancel", headers=user.headers)
    r = api.client.post(f"/api/v2/tasks/{tid}:priority", json={"priority": 1}, headers=api.admin.headers)
    assert r.status_code == 409 and "only a waiting task" in r.json()["message"]
    r = api.client.post(
        "/api/v2/tasks/mvp2-nobody-ppo-20260101-000000-0000:priority",
        json={"priority": 1},
        headers=api.admin.headers,
    )
    assert r.status_code == 404
