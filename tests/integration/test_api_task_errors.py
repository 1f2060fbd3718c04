"""The task routes' error bodies, word for word: status, code, message and problems.

`TaskService` raises the core's error kinds (`argus.domain.errors`) and `argus.service.errors`
maps them to HTTP in one place; these tests pin what a client sees for each refusal of the task
routes, over SQLite and, when configured, PostgreSQL. A log that Ray cannot serve (503) needs an
attempt, so it is checked on the service over the scheduler's world, and mapped like the API does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import Api, AppFactory, backend, open_backend
from test_scheduler import World

from argus.cluster.errors import ClusterUnavailable
from argus.domain.errors import Unavailable
from argus.domain.task import TaskState
from argus.service.auth import Identity
from argus.service.errors import error_body, from_domain_error
from argus.service.task_service import TaskService
from argus.testing.sandbox import Sandbox, prepare

UNKNOWN = "mvp2-nobody-ppo-20260101-000000-0000"
STATES = ", ".join(TaskState.__members__)


@pytest.fixture(scope="module")
def api(tmp_path_factory, backend) -> Iterator[Api]:
    sandbox: Sandbox = prepare(tmp_path_factory.mktemp("shared"))
    factory = AppFactory(sandbox, backend)
    try:
        yield Api(factory(), sandbox, backend)
    finally:
        factory.close_all()


def body_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


def error(code: str, message: str, *problems: tuple[str, str]) -> dict[str, Any]:
    return {"error": code, "message": message, "problems": [{"field": f, "message": m} for f, m in problems]}


@pytest.mark.parametrize(
    "params,problem",
    [
        ({"state": "BOGUS"}, ("state", f"'BOGUS' is not one of {STATES}")),
        ({"state": "QUEUED,CANCELLED"}, ("state", f"'CANCELLED' is not one of {STATES}")),
    ],
)
def test_an_unknown_state_is_a_400_naming_the_first_one(api, params, problem):
    r = api.get(api.new_user(), "/api/v2/tasks", params=params)
    assert body_of(r, 400) == error("bad_request", "unknown state", problem)


@pytest.mark.parametrize("cursor", ["abc", "-1", "1" * 10])
def test_a_cursor_that_is_not_a_next_cursor_is_a_400(api, cursor):
    r = api.get(api.new_user(), "/api/v2/tasks", params={"cursor": cursor})
    assert body_of(r, 400) == error("bad_request", "invalid cursor", ("cursor", "must be a next_cursor value"))


def test_an_unknown_or_foreign_task_is_a_404_on_every_route(api):
    owner, other = api.new_user(), api.new_user()
    tid = api.submit(owner)
    for who, task_id in ((other, UNKNOWN), (other, tid), (api.admin, UNKNOWN), (other, "junk")):
        for method, path in (
            ("get", f"/api/v2/tasks/{task_id}"),
            ("get", f"/api/v2/tasks/{task_id}/attempts"),
            ("get", f"/api/v2/tasks/{task_id}/logs"),
            ("post", f"/api/v2/tasks/{task_id}:cancel"),
        ):
            r = getattr(api, method)(who, path)
            assert body_of(r, 404) == error("not_found", f"no task {task_id}"), (method, path)
    r = api.post(api.admin, f"/api/v2/tasks/{UNKNOWN}:priority", json={"priority": 1})
    assert body_of(r, 404) == error("not_found", f"no task {UNKNOWN}")


def test_logs_of_a_bad_or_missing_attempt(api):
    user = api.new_user()
    tid = api.submit(user)
    r = api.get(user, f"/api/v2/tasks/{tid}/logs", params={"attempt": "abc"})
    assert body_of(r, 400) == error("bad_request", "invalid attempt", ("attempt", "must be 'latest' or a number"))
    for attempt in ("latest", "2"):
        r = api.get(user, f"/api/v2/tasks/{tid}/logs", params={"attempt": attempt})
        assert body_of(r, 404) == error("not_found", f"task {tid} has no attempt {attempt} yet (state QUEUED)")


def test_an_ended_task_cannot_be_cancelled_or_reprioritised(api):
    user = api.new_user()
    tid = api.submit(user)
    assert api.post(user, f"/api/v2/tasks/{tid}:cancel").status_code == 200
    r = api.post(user, f"/api/v2/tasks/{tid}:cancel")
    assert body_of(r, 409) == error("conflict", f"task {tid} already ended (CANCELED)")
    r = api.post(api.admin, f"/api/v2/tasks/{tid}:priority", json={"priority": 1})
    assert body_of(r, 409) == error("conflict", f"task {tid} is CANCELED: only a waiting task's priority can change")


@pytest.mark.parametrize(
    "body",
    [{"priority": 1001}, {"priority": -1}, {"priority": "high"}, {"priority": True}, {"priority": 1.5}],
)
def test_a_priority_out_of_range_is_refused_by_the_request_body(api, body):
    tid = api.submit(api.new_user())
    r = api.post(api.admin, f"/api/v2/tasks/{tid}:priority", json=body)
    wanted = error("bad_request", "invalid priority", ("priority", "must be an integer from 0 to 1000"))
    assert body_of(r, 400) == wanted


@pytest.fixture(params=["sqlite", "postgres"])
def world(request, tmp_path_factory, tmp_path) -> Iterator[World]:
    sandbox = prepare(tmp_path_factory.mktemp("shared"))
    with open_backend(request.param, tmp_path) as db:
        w = World(sandbox, tmp_path, db_url=db.url)
        yield w
        w.db.dispose()


def test_a_log_ray_cannot_serve_without_an_archive_is_unavailable(world):
    tid = world.add()
    world.tick()
    service = TaskService(
        world.settings, world.store, world.jobs, nudge=lambda **_: None, clock=world.clock, check_pool=object()
    )

    def ray_away(sid: str, tail: int | None = None) -> str:
        raise ClusterUnavailable("dashboard away")

    world.jobs.logs = ray_away  # type: ignore[method-assign]
    with pytest.raises(Unavailable) as info:
        service.logs(Identity("alice", False), tid, "latest", None)
    wanted = "Ray is unavailable and no archived log exists: dashboard away"
    answer = from_domain_error(info.value)
    assert error_body(answer.status, answer.message, answer.problems) == error("unavailable", wanted)
    assert answer.status == 503
