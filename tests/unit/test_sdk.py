"""The SDK (`argus.client.sdk`) and the service commands (`argus.client.service_cli`), offline.

Every request goes to an `httpx.MockTransport`; the CLI gets its client through
`service_cli.make_client`, replaced here by one bound to the same fake service.
"""

from __future__ import annotations

import json
import re
import stat
from typing import Any

import httpx
import pytest

from argus.client import service_cli
from argus.client.cli import app
from argus.client.sdk import (
    FINAL_STATES,
    ArgusAPIError,
    ArgusClient,
    ArgusUnavailable,
    Credentials,
    CredentialsError,
    credentials_path,
    load_credentials,
    save_credentials,
)
from argus.testing import FakeClock
from argus.testing.cli import invoke as run_cli

URL = "http://argus.test:8080"
TID = "mvp2-alice-ppo-20261125-021000-7f3a"


class FakeService:
    """Routes `(method, raw path without query)` to a response or a function of the request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Any] = {}
        self.requests: list[httpx.Request] = []

    def route(self, method: str, path: str, answer: Any) -> None:
        self.routes[(method, path)] = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.raw_path.decode().split("?")[0]
        answer = self.routes.get((request.method, path))
        if answer is None:
            return httpx.Response(404, json={"error": "not_found", "message": f"no route {path}", "problems": []})
        return answer(request) if callable(answer) else answer

    def client(self, url: str = URL, token: str = "tok", **kw: Any) -> ArgusClient:
        return ArgusClient(url, token, transport=httpx.MockTransport(self), **kw)


def error(status: int, code: str, message: str, problems: list[dict] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": message, "problems": problems or []})


@pytest.fixture
def svc() -> FakeService:
    return FakeService()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    for name in ("ARGUS_URL", "ARGUS_TOKEN", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARGUS_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("NO_COLOR", "1")


# -- errors -----------------------------------------------------------------------------------
def test_error_body_becomes_api_error_with_problems(svc):
    problems = [
        {"field": "nnodes", "message": "Input should be greater than or equal to 1"},
        {"field": "train_file", "message": "must lie under /srv/shared/common/"},
    ]
    svc.route("POST", "/api/v2/tasks", error(400, "bad_request", "task spec is invalid", problems))
    with pytest.raises(ArgusAPIError) as info:
        svc.client().submit("workload: ppo\n")
    exc = info.value
    assert (exc.status, exc.error, exc.message) == (400, "bad_request", "task spec is invalid")
    assert [p["field"] for p in exc.problems] == ["nnodes", "train_file"]
    assert exc.problems[0]["message"] == "Input should be greater than or equal to 1"


def test_error_body_that_is_not_json_falls_back_to_text(svc):
    svc.route("GET", "/api/v2/me", httpx.Response(502, text="<html>upstream down</html>"))
    with pytest.raises(ArgusAPIError) as info:
        svc.client().me()
    assert info.value.status == 502
    assert info.value.error == "bad_gateway"
    assert "upstream down" in info.value.message
    assert info.value.problems == []


def test_error_body_in_fastapi_default_shape(svc):
    svc.route("GET", "/api/v2/queue", httpx.Response(404, json={"detail": "Not Found"}))
    svc.route(
        "GET",
        "/api/v2/users",
        httpx.Response(
            422, json={"detail": [{"loc": ["body", "user_id"], "msg": "field required", "type": "missing"}]}
        ),
    )
    with pytest.raises(ArgusAPIError) as info:
        svc.client().queue()
    assert (info.value.status, info.value.message) == (404, "Not Found")
    with pytest.raises(ArgusAPIError) as info:
        svc.client().users()
    assert info.value.problems == [{"field": "user_id", "message": "field required"}]


@pytest.mark.parametrize("exc", [httpx.ConnectError("Connection refused"), httpx.ReadTimeout("timed out")])
def test_unreachable_service_is_unavailable_naming_the_url(exc):
    def boom(request):
        raise exc

    client = ArgusClient(URL + "/", "tok", transport=httpx.MockTransport(boom))
    with pytest.raises(ArgusUnavailable, match=re.escape(URL)):
        client.health()


def test_url_must_be_http():
    with pytest.raises(ValueError, match="http://"):
        ArgusClient("localhost:8080", "tok")


# -- requests ---------------------------------------------------------------------------------
def test_task_ids_are_quoted_as_one_path_segment(svc):
    for path in (
        "/api/v2/tasks/a%2Fb%20c%3F",
        "/api/v2/tasks/a%2Fb%20c%3F/attempts",
        "/api/v2/tasks/a%2Fb%20c%3F:cancel",
        "/api/v2/tasks/a%2Fb%20c%3F/logs",
        "/api/v2/tasks/%2E%2E",
    ):
        svc.route("POST" if path.endswith(":cancel") else "GET", path, httpx.Response(200, json={"ok": path}))
    client = svc.client()
    assert client.task("a/b c?") == {"ok": "/api/v2/tasks/a%2Fb%20c%3F"}
    assert client.attempts("a/b c?")["ok"].endswith("/attempts")
    assert client.cancel("a/b c?")["ok"].endswith(":cancel")
    assert client.task("..") == {"ok": "/api/v2/tasks/%2E%2E"}
    svc.route("GET", "/api/v2/tasks/a%2Fb%20c%3F/logs", httpx.Response(200, text="line\n"))
    assert client.logs("a/b c?", attempt=2, tail=5) == "line\n"
    assert dict(svc.requests[-1].url.params) == {"attempt": "2", "tail": "5"}
    with pytest.raises(ValueError):
        client.task("")


def test_submit_sends_yaml_verbatim_with_bearer_token(svc):
    text = "workload: ppo\n# comment kept\nnnodes: 1\n"
    svc.route("POST", "/api/v2/tasks", httpx.Response(201, json={"task_id": TID, "state": "QUEUED"}))
    assert svc.client(token="argus_abc").submit(text) == {"task_id": TID, "state": "QUEUED"}
    req = svc.requests[0]
    assert req.content == text.encode()
    assert req.headers["content-type"] == "application/yaml"
    assert req.headers["authorization"] == "Bearer argus_abc"


def test_base_url_with_a_prefix_and_trailing_slash(svc):
    svc.route("GET", "/prefix/api/v2/me", httpx.Response(200, json={"user_id": "alice", "is_admin": False}))
    assert svc.client(url="http://argus.test/prefix/").me()["user_id"] == "alice"


def test_tasks_repeats_state_and_iter_tasks_follows_cursors(svc):
    pages = {None: (["t5", "t4"], "c1"), "c1": (["t3", "t2"], "c2"), "c2": (["t1"], None)}

    def page(request):
        ids, nxt = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"tasks": [{"task_id": i} for i in ids], "next_cursor": nxt})

    svc.route("GET", "/api/v2/tasks", page)
    client = svc.client()
    assert [t["task_id"] for t in client.iter_tasks(state=["RUNNING", "FAILED"], limit=2)] == [
        "t5",
        "t4",
        "t3",
        "t2",
        "t1",
    ]
    assert [r.url.params.get("cursor") for r in svc.requests] == [None, "c1", "c2"]
    assert all(r.url.params.get_list("state") == ["RUNNING", "FAILED"] for r in svc.requests)
    assert all(r.url.params["limit"] == "2" for r in svc.requests)
    client.tasks(state="QUEUED")
    assert svc.requests[-1].url.params.get_list("state") == ["QUEUED"]


def test_iter_tasks_stops_on_a_repeated_cursor(svc):
    svc.route("GET", "/api/v2/tasks", httpx.Response(200, json={"tasks": [{"task_id": "x"}], "next_cursor": "same"}))
    with pytest.raises(ArgusAPIError, match="repeated"):
        list(svc.client().iter_tasks())


# -- follow_logs and wait ---------------------------------------------------------------------
def scripted(svc: FakeService, steps: list[tuple[str, int | None, str | None]]) -> list[float]:
    """Each poll of the task answers the next (state, attempt_no, log text); None log: 404."""
    it = iter(steps)
    current: dict[str, Any] = {}

    def task(request):
        state, attempt_no, text = next(it)
        current.update(attempt_no=attempt_no, text=text)
        latest = None if attempt_no is None else {"attempt_no": attempt_no}
        return httpx.Response(200, json={"task_id": TID, "state": state, "latest_attempt": latest})

    def logs(request):
        assert request.url.params["attempt"] == str(current["attempt_no"])
        if current["text"] is None:
            return error(404, "not_found", "no such attempt")
        return httpx.Response(200, text=current["text"])

    svc.route("GET", f"/api/v2/tasks/{TID}", task)
    svc.route("GET", f"/api/v2/tasks/{TID}/logs", logs)
    return []


def test_follow_logs_yields_only_new_text_and_stops_at_a_final_state(svc):
    sleeps = scripted(
        svc,
        [
            ("QUEUED", None, None),
            ("RUNNING", 1, None),  # attempt exists, log not yet there
            ("RUNNING", 1, "a\n"),
            ("RUNNING", 1, "a\nb\n"),
            ("RUNNING", 1, "a\nb\n"),  # nothing new
            ("SUCCEEDED", 1, "a\nb\nc\n"),
        ],
    )
    chunks = list(svc.client(sleep=sleeps.append).follow_logs(TID, poll_s=0.25))
    assert chunks == ["a\n", "b\n", "c\n"]
    assert sleeps == [0.25] * 5  # no sleep after the final poll


def test_follow_logs_survives_the_log_being_replaced_by_its_archive(svc):
    sleeps = scripted(
        svc,
        [
            ("RUNNING", 1, "live 1\nlive 2\n"),
            ("RUNNING", 1, "archived\n"),  # replaced and shorter: nothing
            ("RUNNING", 1, "archived\nmore text here\n"),  # grows past what was seen
            ("FAILED", 1, "archived\nmore text here\nend\n"),
        ],
    )
    chunks = list(svc.client(sleep=sleeps.append).follow_logs(TID, poll_s=0))
    seen_len = len("live 1\nlive 2\n")
    assert chunks == ["live 1\nlive 2\n", "archived\nmore text here\n"[seen_len:], "end\n"]


def test_follow_logs_starts_afresh_for_a_new_attempt(svc):
    sleeps = scripted(svc, [("RUNNING", 1, "first try\n"), ("RUNNING", 2, "x\n"), ("SUCCEEDED", 2, "x\ny\n")])
    assert list(svc.client(sleep=sleeps.append).follow_logs(TID)) == ["first try\n", "x\n", "y\n"]


def test_follow_logs_of_a_task_canceled_before_any_attempt_yields_nothing(svc):
    sleeps = scripted(svc, [("QUEUED", None, None), ("CANCELED", None, None)])
    assert list(svc.client(sleep=sleeps.append).follow_logs(TID)) == []
    assert not any(r.url.path.endswith("/logs") for r in svc.requests)


def test_wait_returns_the_final_task_or_times_out(svc):
    states = iter(["QUEUED", "RUNNING", "TIMEOUT"])
    svc.route("GET", f"/api/v2/tasks/{TID}", lambda r: httpx.Response(200, json={"state": next(states)}))
    clock = FakeClock()
    client = svc.client(sleep=clock.sleep, clock=clock)
    assert client.wait(TID, timeout_s=10, poll_s=1)["state"] == "TIMEOUT"
    assert "TIMEOUT" in FINAL_STATES

    svc.route("GET", f"/api/v2/tasks/{TID}", httpx.Response(200, json={"state": "RUNNING"}))
    clock.set(0.0)
    with pytest.raises(TimeoutError, match="still RUNNING after 3s"):
        client.wait(TID, timeout_s=3, poll_s=1)
    assert clock() == pytest.approx(3.0)


# -- credentials ------------------------------------------------------------------------------
def test_credentials_path_precedence(tmp_path, monkeypatch):
    assert credentials_path() == tmp_path / "cfg" / "credentials.json"
    monkeypatch.delenv("ARGUS_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert credentials_path() == tmp_path / "xdg" / "argus" / "credentials.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert credentials_path() == tmp_path / "home" / ".config" / "argus" / "credentials.json"


def test_saved_credentials_are_private_and_env_wins_per_field(tmp_path, monkeypatch):
    path = save_credentials(Credentials(URL, "file-token"))
    assert path == tmp_path / "cfg" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_credentials() == Credentials(URL, "file-token")
    monkeypatch.setenv("ARGUS_TOKEN", "env-token")
    assert load_credentials() == Credentials(URL, "env-token")
    monkeypatch.setenv("ARGUS_URL", "http://other:1")
    assert load_credentials() == Credentials("http://other:1", "env-token")
    assert load_credentials(token="flag-token") == Credentials("http://other:1", "flag-token")
    save_credentials(Credentials(URL, "second"))  # overwrite keeps the mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": URL, "token": "second"}


def test_missing_credentials_say_how_to_log_in(monkeypatch):
    with pytest.raises(CredentialsError, match=r"argus login --url URL --token TOKEN"):
        load_credentials()
    monkeypatch.setenv("ARGUS_URL", URL)
    with pytest.raises(CredentialsError, match="no Argus token"):
        load_credentials()


# -- CLI --------------------------------------------------------------------------------------
@pytest.fixture
def cli(svc, monkeypatch):
    """Invoke `argus ...` against the fake service; records the (url, token) each client got."""
    made: list[tuple[str, str]] = []

    def make_client(url: str, token: str) -> ArgusClient:
        made.append((url, token))
        return svc.client(url=url, token=token, sleep=lambda s: None)

    monkeypatch.setattr(service_cli, "make_client", make_client)
    monkeypatch.setenv("ARGUS_URL", URL)
    monkeypatch.setenv("ARGUS_TOKEN", "env-token")

    def invoke(*args: Any):
        return run_cli(app, *args)

    invoke.made = made  # type: ignore[attr-defined]
    return invoke


def test_cli_submit_prints_the_task_id_and_json(cli, svc, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("workload: ppo\n# verbatim\n")
    svc.route("POST", "/api/v2/tasks", httpx.Response(201, json={"task_id": TID, "state": "QUEUED"}))
    result = cli("submit", spec)
    assert result.exit_code == 0, result.output
    assert TID in result.out_text
    assert svc.requests[-1].content == b"workload: ppo\n# verbatim\n"
    result = cli("submit", spec, "--json")
    assert json.loads(result.stdout) == {"task_id": TID, "state": "QUEUED"}


@pytest.mark.parametrize("status,code", [(400, "bad_request"), (413, "too_large"), (415, "unsupported_media_type")])
def test_cli_bad_input_answers_exit_2_listing_problems(cli, svc, tmp_path, status, code):
    spec = tmp_path / "job.yaml"
    spec.write_text("workload: ppo\n")
    svc.route(
        "POST",
        "/api/v2/tasks",
        error(status, code, "task spec is invalid", [{"field": "nnodes", "message": "Input should be >= 1"}]),
    )
    result = cli("submit", spec)
    assert result.exit_code == 2
    assert "nnodes: Input should be >= 1" in result.err_text
    assert result.out_text == ""


def test_cli_missing_file_is_exit_2_naming_it(cli, svc, tmp_path):
    result = cli("submit", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert str(tmp_path / "nope.yaml") in result.err_text
    assert svc.requests == []


@pytest.mark.parametrize(
    "status,code,args",
    [
        (401, "unauthorized", ("status", TID)),
        (403, "forbidden", ("users", "list")),
        (404, "not_found", ("attempts", TID)),
        (409, "conflict", ("cancel", TID)),
    ],
)
def test_cli_refusals_exit_1_with_the_message(cli, svc, status, code, args):
    answer = error(status, code, f"the {code} message")
    for method, path in (
        ("GET", f"/api/v2/tasks/{TID}"),
        ("GET", "/api/v2/users"),
        ("GET", f"/api/v2/tasks/{TID}/attempts"),
        ("POST", f"/api/v2/tasks/{TID}:cancel"),
    ):
        svc.route(method, path, answer)
    result = cli(*args)
    assert result.exit_code == 1
    assert f"the {code} message" in result.err_text


def test_cli_unreachable_service_exits_1(cli, monkeypatch):
    def refuse(request):
        raise httpx.ConnectError("Connection refused")

    monkeypatch.setattr(
        service_cli,
        "make_client",
        lambda url, token: ArgusClient(url, token, transport=httpx.MockTransport(refuse)),
    )
    result = cli("queue")
    assert result.exit_code == 1
    assert f"cannot reach the Argus service at {URL}" in result.err_text


def test_cli_without_credentials_exits_2(cli, monkeypatch):
    monkeypatch.delenv("ARGUS_URL")
    monkeypatch.delenv("ARGUS_TOKEN")
    result = cli("me")
    assert result.exit_code == 2
    assert "argus login --url URL --token TOKEN" in result.err_text


def test_cli_flags_beat_env_which_beats_the_saved_login(cli, svc):
    save_credentials(Credentials("http://saved:1", "saved-token"))
    svc.route("GET", "/api/v2/me", httpx.Response(200, json={"user_id": "alice", "is_admin": False}))
    assert cli("me").exit_code == 0
    assert cli("me", "--token", "flag-token", "--url", "http://flag:2").exit_code == 0
    assert cli.made == [(URL, "env-token"), ("http://flag:2", "flag-token")]
    assert svc.requests[-1].headers["authorization"] == "Bearer flag-token"


def test_cli_login_checks_then_saves_privately(cli, svc):
    svc.route("GET", "/api/v2/me", httpx.Response(200, json={"user_id": "admin", "is_admin": True}))
    result = cli("login", "--url", "http://argus.test:8080/", "--token", "argus_t")
    assert result.exit_code == 0, result.output
    assert "as admin (admin)" in result.out_text
    path = credentials_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": URL, "token": "argus_t"}


def test_cli_login_with_a_bad_token_saves_nothing(cli, svc):
    svc.route("GET", "/api/v2/me", error(401, "unauthorized", "unknown token"))
    result = cli("login", "--url", URL, "--token", "wrong")
    assert result.exit_code == 1
    assert "unknown token" in result.err_text
    assert not credentials_path().exists()


def test_cli_tasks_all_pages_table_and_state_filter(cli, svc):
    pages = {None: ([TID], "c1"), "c1": (["mvp2-bob-sft-20261125-021001-0b0b"], None)}

    def page(request):
        ids, nxt = pages[request.url.params.get("cursor")]
        rows = [
            {
                "task_id": i,
                "user_id": i.split("-")[1],
                "workload": "ppo",
                "state": "FAILED",
                "failure_cause": "OOM",
                "created_at": "2026-11-25T02:10:00.123456+00:00",
                "attempts": 2,
                "desired_resources": {"nnodes": 2, "n_gpus_per_node": 4, "total_gpus": 8},
            }
            for i in ids
        ]
        return httpx.Response(200, json={"tasks": rows, "next_cursor": nxt})

    svc.route("GET", "/api/v2/tasks", page)
    result = cli("tasks", "--state", "failed,running", "--all")
    assert result.exit_code == 0, result.output
    assert TID in result.out_text and "mvp2-bob-sft-20261125-021001-0b0b" in result.out_text
    assert "2026-11-25 02:10:00" in result.out_text and "OOM" in result.out_text
    assert svc.requests[0].url.params.get_list("state") == ["FAILED", "RUNNING"]

    result = cli("tasks", "--json")
    assert json.loads(result.stdout)["next_cursor"] == "c1"
    result = cli("tasks")
    assert TID in result.out_text and "bob" not in result.out_text
    assert "--all" in result.err_text

    result = cli("tasks", "--state", "DONE")
    assert result.exit_code == 2
    assert "DONE" in result.err_text


def test_cli_logs_options_and_follow(cli, svc):
    assert cli("logs", TID, "--attempt", "first").exit_code == 2
    assert cli("logs", TID, "--attempt", "2", "-f").exit_code == 2
    svc.route("GET", f"/api/v2/tasks/{TID}/logs", httpx.Response(200, text="x\ny\n"))
    result = cli("logs", TID, "--attempt", "2", "--tail", "1")
    assert result.exit_code == 0
    assert result.stdout == "x\ny\n"
    assert dict(svc.requests[-1].url.params) == {"attempt": "2", "tail": "1"}

    scripted(svc, [("RUNNING", 1, "a\nb\n"), ("SUCCEEDED", 1, "a\nb\nc\n")])
    result = cli("logs", TID, "-f", "--tail", "1")
    assert result.exit_code == 0
    assert result.stdout == "b\nc\n"


def test_cli_tokens_issue_prints_only_the_token_on_stdout(cli, svc):
    svc.route(
        "POST",
        "/api/v2/users/alice/tokens",
        httpx.Response(201, json={"user_id": "alice", "token": "argus_X"}),
    )
    result = cli("tokens", "issue", "alice")
    assert result.exit_code == 0
    assert result.stdout == "argus_X\n"
    assert "shown once" in result.err_text


def test_cli_status_and_queue_render(cli, svc):
    svc.route(
        "GET",
        f"/api/v2/tasks/{TID}",
        httpx.Response(
            200,
            json={
                "task_id": TID,
                "user_id": "alice",
                "workload": "ppo",
                "state": "PENDING_RESOURCES",
                "desired_resources": {"nnodes": 1, "n_gpus_per_node": 4, "total_gpus": 4},
                "latest_attempt": None,
                "pending_reason": "needs 1 node(s) x 4 GPU(s) [not markup]",
                "created_at": "2026-11-25T02:10:00+00:00",
                "updated_at": "2026-11-25T02:11:00+00:00",
            },
        ),
    )
    result = cli("status", TID)
    assert result.exit_code == 0, result.output
    assert "needs 1 node(s) x 4 GPU(s) [not markup]" in result.out_text
    assert "PENDING_RESOURCES" in result.out_text
    svc.route(
        "GET",
        "/api/v2/queue",
        httpx.Response(
            200,
            json={
                "pending": [],
                "running": [
                    {
                        "task_id": TID,
                        "user_id": "alice",
                        "state": "RUNNING",
                        "ray_submission_id": TID + "--a01",
                    }
                ],
            },
        ),
    )
    result = cli("queue")
    assert result.exit_code == 0
    assert TID + "--a01" in result.out_text


def test_set_priority_posts_the_value_to_the_priority_route(svc):
    svc.route(
        "POST",
        f"/api/v2/tasks/{TID}:priority",
        lambda r: httpx.Response(200, json={"task_id": TID, **json.loads(r.content)}),
    )
    assert svc.client().set_priority(TID, 900) == {"task_id": TID, "priority": 900}
    svc.route(
        "POST",
        f"/api/v2/tasks/{TID}:priority",
        error(409, "conflict", "only a waiting task's priority can change"),
    )
    with pytest.raises(ArgusAPIError) as exc:
        svc.client().set_priority(TID, 1)
    assert exc.value.status == 409


# -- the driver node of the latest attempt (`argus status`) ----------------------------------------
NODE_ID = "3f2a01bc" + "9" * 48  # a Ray node id: 56 hex digits


def _running_task(**driver: Any) -> dict[str, Any]:
    attempt = {
        "attempt_no": 1,
        "ray_submission_id": TID + "--a01",
        "ray_status": "RUNNING",
        "failure_kind": None,
        "message": None,
        "driver_node_id": None,
        "driver_node_ip": None,
        "driver_node_name": None,
    }
    attempt.update(driver)
    return {
        "task_id": TID,
        "user_id": "alice",
        "workload": "ppo",
        "state": "RUNNING",
        "desired_resources": {"nnodes": 1, "n_gpus_per_node": 4, "total_gpus": 4},
        "latest_attempt": attempt,
        "created_at": "2026-11-25T02:10:00+00:00",
        "updated_at": "2026-11-25T02:11:00+00:00",
    }


def test_cli_status_shows_the_driver_node_of_the_latest_attempt(cli, svc):
    task = _running_task(driver_node_id=NODE_ID, driver_node_ip="10.0.0.2", driver_node_name="worker-1")
    svc.route("GET", f"/api/v2/tasks/{TID}", httpx.Response(200, json=task))
    result = cli("status", TID)
    assert result.exit_code == 0, result.output
    lines = result.out_text.splitlines()
    assert "driver node     worker-1 (10.0.0.2, id 3f2a01bc…)" in lines
    assert lines.index("driver node     worker-1 (10.0.0.2, id 3f2a01bc…)") == 1 + next(
        i for i, line in enumerate(lines) if line.startswith("latest attempt  #1 ")
    )
    assert cli("status", TID, "--json").json()["latest_attempt"]["driver_node_id"] == NODE_ID


def test_cli_status_shows_no_driver_node_while_it_is_unknown(cli, svc):
    svc.route("GET", f"/api/v2/tasks/{TID}", httpx.Response(200, json=_running_task()))
    result = cli("status", TID)
    assert result.exit_code == 0, result.output
    assert f"#1 {TID}--a01 RUNNING" in result.out_text
    assert "driver node" not in result.out_text
    older = _running_task()  # a server from before the fields: no keys at all
    for key in ("driver_node_id", "driver_node_ip", "driver_node_name"):
        del older["latest_attempt"][key]
    svc.route("GET", f"/api/v2/tasks/{TID}", httpx.Response(200, json=older))
    result = cli("status", TID)
    assert result.exit_code == 0 and "driver node" not in result.out_text


@pytest.mark.parametrize(
    "fields, shown",
    [
        ({"driver_node_ip": "10.0.0.2"}, "10.0.0.2"),
        ({"driver_node_ip": "10.0.0.2", "driver_node_id": NODE_ID}, "10.0.0.2 (id 3f2a01bc…)"),
        ({"driver_node_id": "abc"}, "id abc"),
        ({"driver_node_name": "worker-[b]"}, "worker-[b]"),
    ],
)
def test_cli_status_shows_what_is_known_of_the_driver_node(cli, svc, fields, shown):
    svc.route("GET", f"/api/v2/tasks/{TID}", httpx.Response(200, json=_running_task(**fields)))
    result = cli("status", TID)
    assert result.exit_code == 0, result.output
    assert f"driver node     {shown}\n" in result.out_text


def test_cli_users_disable_and_enable_print_the_new_state_or_the_answer(cli, svc):
    svc.route("POST", "/api/v2/users/bob:disable", httpx.Response(200, json={"user_id": "bob", "state": "DISABLED"}))
    svc.route("POST", "/api/v2/users/bob:enable", httpx.Response(200, json={"user_id": "bob", "state": "ACTIVE"}))
    result = cli("users", "disable", "bob")
    assert (result.exit_code, result.stdout) == (0, "bob: DISABLED\n")
    result = cli("users", "enable", "bob", "--json")
    assert result.exit_code == 0 and result.json() == {"user_id": "bob", "state": "ACTIVE"}
