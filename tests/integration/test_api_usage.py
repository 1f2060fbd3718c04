"""`GET /api/v2/usage`, the per-task figures and `argus usage`, over a real database (SQLite, and
PostgreSQL when `ARGUS_TEST_DATABASE_URL` is set), the scheduler run one pass at a time over
faked Ray jobs on a fake clock.

A window that cuts attempts in half reports half of their GPU-seconds; a user sees only their
own usage, the admin everyone's; bad parameters are 400s naming the field; the CLI's --json and
--csv print the same figures.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from api_support import Backend, User, World, backend, fake_ray_world, sandbox
from typer.testing import CliRunner

from argus.client import service_cli
from argus.client.cli import app as cli_app
from argus.client.sdk import ArgusClient
from argus.service.api_models import TaskDetail
from argus.service.api_models_usage import UsageReport
from argus.testing.cli import CliResult
from argus.testing.fakes import FakeSnapshots
from argus.testing.sandbox import Sandbox


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    yield from fake_ray_world(
        sandbox, backend, FakeSnapshots({"w1": 4, "w2": 4, "w3": 8}, labels={"w1": {"pool": "h20"}})
    )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def usage(world: World, who: User, status: int = 200, **params) -> dict:
    r = world.get(who, "/api/v2/usage", params=params)
    assert r.status_code == status, r.text
    body = r.json()
    if status == 200:
        assert UsageReport.model_validate(body).model_dump(mode="json") == body
    return body


def run_one(world: World, who: User, gpus: int, seconds: float, pool: str | None = None) -> tuple[str, float, float]:
    """Submit a task of `gpus` GPUs, admit it, run it for `seconds` and finish it: (id, start, end)."""
    fields = {"n_gpus_per_node": gpus, **({"pool": pool} if pool else {})}
    tid = world.submit(who, world.spec(**fields))
    world.tick()
    start = world.clock()
    assert world.get(who, f"/api/v2/tasks/{tid}").json()["state"] == "SUBMITTED"
    world.jobs.run(f"{tid}--a01")
    world.clock.advance(seconds - 1)
    world.jobs.finish(f"{tid}--a01")
    world.tick()  # seen ended: the allocation ends at start + seconds
    return tid, start, world.clock()


def test_a_window_that_cuts_attempts_in_half_reports_half(world):
    alice = world.new_user("alice")
    tid, start, end = run_one(world, alice, 4, 200)
    assert end - start == 200
    half = usage(world, alice, **{"from": str(start + 100), "to": str(end + 50), "group_by": "user"})
    assert half["user"] == alice.user_id and half["group_by"] == "user"
    assert (half["start"], half["end"]) == (iso(start + 100), iso(end + 50))
    [row] = half["rows"]
    assert row == {
        "key": alice.user_id,
        "gpu_seconds": 400.0,  # 4 GPUs x the 100 s of the second half
        "gpu_hours": round(400 / 3600, 6),
        "tasks": 1,
        "attempts": 1,
        "wait_s": None,  # it started before the window
        "run_s": 100.0,
    }
    assert half["total"] == {**row, "key": "total"}
    whole = usage(world, alice, **{"from": iso(start - 10), "to": iso(end), "group_by": "task"})
    assert [(r["key"], r["gpu_seconds"], r["run_s"], r["wait_s"]) for r in whole["rows"]] == [(tid, 800.0, 200.0, 1.0)]
    detail = world.get(alice, f"/api/v2/tasks/{tid}").json()
    assert TaskDetail.model_validate(detail).model_dump(mode="json") == detail
    assert (detail["gpu_seconds"], detail["wait_s"], detail["run_s"]) == (800.0, 1.0, 200.0)


def test_a_running_attempt_counts_up_to_now_and_its_task_shows_it(world):
    bob = world.new_user("bob")
    tid = world.submit(bob, world.spec(n_gpus_per_node=2))
    queued = world.get(bob, f"/api/v2/tasks/{tid}").json()
    assert (queued["gpu_seconds"], queued["wait_s"], queued["run_s"]) == (0.0, None, 0.0)
    world.tick()
    start = world.clock()
    world.clock.advance(30)
    body = usage(world, bob, **{"from": str(start - 5), "to": str(start + 3600), "group_by": "pool"})
    assert [(r["key"], r["gpu_seconds"], r["run_s"]) for r in body["rows"]] == [("-", 60.0, 30.0)]
    detail = world.get(bob, f"/api/v2/tasks/{tid}").json()
    assert (detail["gpu_seconds"], detail["wait_s"], detail["run_s"]) == (60.0, 1.0, 30.0)
    assert world.post(bob, f"/api/v2/tasks/{tid}:cancel").json()["state"] == "CANCELED"
    world.clock.advance(100)  # cancelled: nothing more counts
    assert world.get(bob, f"/api/v2/tasks/{tid}").json()["gpu_seconds"] == 60.0


def test_a_user_sees_only_their_own_usage_and_the_admin_everyones(world):
    carol, dave = world.new_user("carol"), world.new_user("dave")
    _, c0, _ = run_one(world, carol, 1, 50, pool="h20")
    _, _, d1 = run_one(world, dave, 2, 20)
    window = {"from": str(c0 - 1), "to": str(d1 + 1)}
    mine = usage(world, dave, **window)
    assert [r["key"] for r in mine["rows"]] == [dave.user_id] and mine["user"] == dave.user_id
    assert mine["rows"][0]["gpu_seconds"] == 40.0
    denied = world.get(dave, "/api/v2/usage", params={**window, "user": carol.user_id})
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    assert "only the admin" in denied.json()["message"]
    own = usage(world, dave, **window, user=dave.user_id)
    assert own["rows"] == mine["rows"]
    everyone = usage(world, world.admin, **window)
    assert everyone["user"] is None
    keys = {r["key"]: r["gpu_seconds"] for r in everyone["rows"]}
    assert keys[carol.user_id] == 50.0 and keys[dave.user_id] == 40.0
    one = usage(world, world.admin, **window, user=carol.user_id, group_by="pool")
    assert [(r["key"], r["gpu_seconds"]) for r in one["rows"]] == [("h20", 50.0)] and one["user"] == carol.user_id
    by_day = usage(world, world.admin, **window, user=carol.user_id, group_by="day")
    assert [r["key"] for r in by_day["rows"]] == [datetime.fromtimestamp(c0, tz=UTC).strftime("%Y-%m-%d")]


@pytest.mark.parametrize(
    ("params", "field", "text"),
    [
        ({"group_by": "month"}, "group_by", "must be one of user, pool, day, task"),
        ({"from": "yesterday"}, "from", "ISO 8601"),
        ({"to": "2027-13-45"}, "to", "ISO 8601"),
        ({"from": "2027-01-15", "to": "2027-01-14"}, "to", "must be after from"),
        ({"from": "1e400"}, "from", "ISO 8601"),
        ({"user": "Not-A-User"}, "user", "lower-case"),
    ],
)
def test_bad_parameters_are_400s_naming_the_field(world, params, field, text):
    body = world.get(world.admin, "/api/v2/usage", params=params).json()
    assert body["error"] == "bad_request", body
    [problem] = body["problems"]
    assert problem["field"] == field and text in problem["message"], body


def test_dates_times_and_epoch_seconds_name_the_same_window(world):
    erin = world.new_user("erin")
    a = usage(world, erin, **{"from": "2027-01-15", "to": "2027-01-16T00:00:00Z"})
    b = usage(world, erin, **{"from": str(datetime(2027, 1, 15, tzinfo=UTC).timestamp()), "to": "2027-01-16T00:00"})
    assert a["start"] == b["start"] == "2027-01-15T00:00:00+00:00" and a["end"] == b["end"]
    basic = usage(world, erin, **{"from": "20270115", "to": "2027-01-16T00:00Z"})  # ISO 8601's basic date
    assert basic["start"] == a["start"]
    default = usage(world, erin)
    now = world.clock()
    assert (default["start"], default["end"], default["now"]) == (iso(now - 7 * 86400), iso(now), iso(now))
    assert default["rows"] == [] and default["total"]["gpu_seconds"] == 0 and default["total"]["wait_s"] is None


def _cli(*args: str) -> CliResult:
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    return CliResult(runner.invoke(cli_app, list(args), catch_exceptions=False))


def test_cli_usage_prints_a_table_json_and_csv(world, monkeypatch):
    transport = world.client._transport  # the TestClient's: requests go to the app in-process
    monkeypatch.setattr(service_cli, "make_client", lambda url, token: ArgusClient(url, token, transport=transport))
    frank = world.new_user("frank")
    tid, start, end = run_one(world, frank, 4, 900)
    auth = ["--url", "http://testserver", "--token", frank.token]
    window = ["--from", str(start + 450), "--to", str(end + 100)]

    as_json = _cli("usage", *window, "--by", "task", "--json", *auth)
    assert as_json.exit_code == 0, as_json.err_text
    body = as_json.json()
    assert [(r["key"], r["gpu_seconds"], r["run_s"]) for r in body["rows"]] == [(tid, 1800.0, 450.0)]

    as_csv = _cli("usage", *window, "--csv", *auth)
    assert as_csv.exit_code == 0, as_csv.err_text
    rows = list(csv.reader(io.StringIO(as_csv.out_text)))
    assert rows == [
        ["user", "gpu_hours", "gpu_seconds", "tasks", "attempts", "wait_s", "run_s"],
        [frank.user_id, "0.5", "1800.0", "1", "1", "", "450.0"],
    ]

    table = _cli("usage", *window, *auth)
    assert table.exit_code == 0, table.err_text
    assert frank.user_id in table.out_text and "0.50" in table.out_text and "7m30s" in table.out_text
    assert "GPU-hours" in table.out_text and "total" in table.out_text

    status = _cli("status", tid, *auth)
    assert status.exit_code == 0, status.err_text
    assert "1.00 GPU-hours (3,600 GPU-seconds)" in status.out_text and "15m" in status.out_text

    bad = _cli("usage", "--from", "soon", *auth)
    assert bad.exit_code == 2 and "from: " in bad.err_text and "ISO 8601" in bad.err_text
    assert _cli("usage", "--by", "week", *auth).exit_code == 2
    other = _cli("usage", "--user", "someone_else", *auth)
    assert other.exit_code == 1 and "403 forbidden" in other.err_text
