"""The REST API (docs/api.md) over a real database: SQLite, and PostgreSQL when configured.

Covers the seed v2.5 users-and-tokens acceptance, submission (verbatim storage, content types,
the body limit, field-level refusals, inputs confined to `<shared_root>/common/`), isolation
between users, listing and pagination, cancel and its events, logs before any attempt, the
operational routes, user management, odd inputs (never a 500) and a restart over the same
database. Every test runs once per backend: a SQLite file, and PostgreSQL when
`ARGUS_TEST_DATABASE_URL` is set (a schema of its own per module; see api_support.py).

One app is built per backend (building one is cheap; the Hydra check of a spec, cached per app,
is not), so tests isolate themselves with users of their own. The scheduler does not run and
nothing here talks to Ray.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_support import Api, AppFactory, backend, no_verl_config_override, sandbox

from argus.spec.redact import redact_spec_text
from argus.testing.sandbox import Sandbox

ERROR_KEYS = {"error", "message", "problems"}
TASK_ID_RE = r"^mvp2-{user}-ppo-\d{{8}}-\d{{6}}-[0-9a-f]{{4}}$"
SUMMARY_KEYS = {
    "task_id",
    "user_id",
    "workload",
    "state",
    "failure_cause",
    "created_at",
    "updated_at",
    "desired_resources",
    "attempts",
}
DETAIL_KEYS = {
    "task_id",
    "user_id",
    "workload",
    "state",
    "desired_resources",
    "latest_attempt",
    "error_summary",
    "failure_cause",
    "pending_reason",
    "next_run_at",
    "created_at",
    "updated_at",
    "jobspec_yaml",
}
RESOURCES = {"nnodes": 1, "n_gpus_per_node": 2, "total_gpus": 2, "pool": None}

pytestmark = pytest.mark.usefixtures("no_verl_config_override")


# -- helpers ------------------------------------------------------------------------------------
def assert_error(response, status: int, error: str, field: str | None = None) -> dict[str, Any]:
    """`response` is `status` with the one error body shape; `field` among its problems."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["problems"], list), body
    for p in body["problems"]:
        assert set(p) == {"field", "message"}, body
        assert isinstance(p["field"], str) and isinstance(p["message"], str), body
    if field is not None:
        assert field in [p["field"] for p in body["problems"]], body
    return body


def assert_client_error(response) -> dict[str, Any]:
    """Any 4xx, with the error body shape (and its `error` code matching the status)."""
    codes = {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "too_large",
        415: "unsupported_media_type",
    }
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    return assert_error(response, response.status_code, codes[response.status_code])


def problem(body: dict[str, Any], field: str) -> str:
    """The message of the first problem naming `field`."""
    return next(p["message"] for p in body["problems"] if p["field"] == field)


def utc(ts: str) -> datetime:
    value = datetime.fromisoformat(ts)
    assert value.utcoffset() == timedelta(0), ts
    return value


def ids(tasks: list[dict[str, Any]]) -> list[str]:
    return [t["task_id"] for t in tasks]


@contextmanager
def nothing_stored(api, who):
    """No task and no task event is written inside the block; `who`'s list is unchanged."""
    before = (api.backend.count("tasks"), api.backend.count("task_events"), api.list_all(who))
    yield
    after = (api.backend.count("tasks"), api.backend.count("task_events"), api.list_all(who))
    assert after == before


@pytest.fixture(scope="module")
def app_factory(sandbox, backend) -> Iterator[AppFactory]:
    factory = AppFactory(sandbox, backend)
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture(scope="module")
def api(app_factory, sandbox, backend) -> Api:
    return Api(app_factory(), sandbox, backend)


@pytest.fixture(scope="module")
def alice(api):
    """The seeds' user `alice` (one per database)."""
    return api.create_user("alice")


# -- the database in use ------------------------------------------------------------------------
def test_database_is_the_one_configured(api, backend):
    tables = {"users", "tokens", "tasks", "attempts", "task_events"}
    if backend.name == "sqlite":
        path = Path(backend.url.removeprefix("sqlite:///"))
        assert path.is_file()
        names = {r["name"] for r in backend.rows("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables <= names
    else:
        names = {
            r["table_name"]
            for r in backend.rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s", s=backend.schema
            )
        }
        assert tables <= names
        with api.client.app.state.db.read.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_schema()").scalar_one() == backend.schema


# -- seed v2.5: users and tokens ------------------------------------------------------------------
def test_admin_creates_user_and_issues_token_shown_once(api, backend):
    uid = api.unique_id("seed")
    r = api.post(api.admin, "/api/v2/users", json={"user_id": uid})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"user_id", "state", "created_at"}
    assert body["user_id"] == uid and body["state"] == "ACTIVE"
    assert abs(utc(body["created_at"]).timestamp() - time.time()) < 60

    r = api.post(api.admin, f"/api/v2/users/{uid}/tokens")
    assert r.status_code == 201, r.text
    assert set(r.json()) == {"user_id", "token"} and r.json()["user_id"] == uid
    token = r.json()["token"]
    assert token.startswith("argus_")
    assert re.fullmatch(r"argus_[A-Za-z0-9_-]{43}", token), token  # 32 bytes, URL-safe base64

    # Only the SHA-256 is stored: nowhere in the tokens table is the plain token.
    rows = backend.rows("SELECT * FROM tokens WHERE user_id = :u", u=uid)
    assert [r["token_hash"] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    for row in backend.rows("SELECT * FROM tokens"):
        assert all(token not in str(v) and token.removeprefix("argus_") not in str(v) for v in row.values()), row

    me = api.client.get("/api/v2/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json() == {"user_id": uid, "is_admin": False}
    assert api.get(api.admin, "/api/v2/me").json() == {"user_id": "admin", "is_admin": True}

    # A second token is another secret; both work; the first is not shown again anywhere.
    second = api.post(api.admin, f"/api/v2/users/{uid}/tokens").json()["token"]
    assert second != token
    for t in (token, second):
        r = api.client.get("/api/v2/me", headers={"Authorization": f"Bearer {t}"})
        assert r.json() == {"user_id": uid, "is_admin": False}
    assert token not in api.get(api.admin, "/api/v2/users").text
    users = api.get(api.admin, "/api/v2/users").json()["users"]
    assert {"user_id": uid, "state": "ACTIVE", "created_at": body["created_at"]} in users


def test_disabled_users_token_is_refused_at_once(api):
    user = api.new_user("gone")
    assert api.get(user, "/api/v2/me").status_code == 200
    tid = api.submit(user)

    r = api.post(api.admin, f"/api/v2/users/{user.user_id}:disable")
    assert r.status_code == 200 and r.json() == {"user_id": user.user_id, "state": "DISABLED"}
    for path in ("/api/v2/me", "/api/v2/tasks", f"/api/v2/tasks/{tid}", "/api/v2/queue"):
        body = assert_error(api.get(user, path), 401, "unauthorized")
        assert body["problems"] == []
    assert_error(api.post_yaml(user, api.spec()), 401, "unauthorized")
    users = {u["user_id"]: u for u in api.get(api.admin, "/api/v2/users").json()["users"]}
    assert users[user.user_id]["state"] == "DISABLED"
    # No new token for a disabled user; the admin still sees the task.
    assert_error(api.post(api.admin, f"/api/v2/users/{user.user_id}/tokens"), 409, "conflict")
    assert api.get(api.admin, f"/api/v2/tasks/{tid}").json()["user_id"] == user.user_id


def test_user_calling_admin_routes_gets_403(api, backend):
    user = api.new_user("plain")
    other = api.new_user("other")
    victim = api.unique_id("never")
    tokens_before = backend.count("tokens")
    calls = [
        ("GET", "/api/v2/users", None),
        ("POST", "/api/v2/users", {"user_id": victim}),
        ("POST", f"/api/v2/users/{user.user_id}/tokens", None),
        ("POST", f"/api/v2/users/{other.user_id}/tokens", None),
        ("POST", f"/api/v2/users/{other.user_id}:disable", None),
        ("POST", f"/api/v2/users/{user.user_id}:disable", None),
    ]
    for method, path, body in calls:
        r = api.client.request(method, path, json=body, headers=user.headers)
        assert_error(r, 403, "forbidden")
    # Nothing happened.
    users = {u["user_id"]: u["state"] for u in api.get(api.admin, "/api/v2/users").json()["users"]}
    assert victim not in users
    assert users[user.user_id] == users[other.user_id] == "ACTIVE"
    assert backend.count("tokens") == tokens_before
    assert api.get(other, "/api/v2/me").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearerabc",
        "Bearer argus_" + "A" * 43,
        "Bearer not-a-token",
        "Bearer {admin}x",
        "Bearer x{admin}",
    ],
)
def test_missing_malformed_or_unknown_token_is_401(api, header):
    headers = {}
    if header is not None:
        headers["Authorization"] = header.replace("{admin}", api.admin.token)
    with nothing_stored(api, api.admin):
        for method, path in (
            ("GET", "/api/v2/me"),
            ("GET", "/api/v2/tasks"),
            ("GET", "/api/v2/queue"),
            ("GET", "/api/v2/users"),
            ("GET", "/api/v2/tasks/mvp2-alice-ppo-20260101-000000-0000"),
            ("POST", "/api/v2/users/alice/tokens"),
        ):
            r = api.client.request(method, path, headers=headers)
            body = assert_error(r, 401, "unauthorized")
            assert body["problems"] == []
            assert r.headers.get("www-authenticate") == "Bearer"
        r = api.client.post(
            "/api/v2/tasks", content=api.spec(), headers={**headers, "Content-Type": "application/yaml"}
        )
        assert_error(r, 401, "unauthorized")
    if not header:
        assert "missing" in body["message"]


def test_401_messages_tell_missing_from_malformed_from_unknown(api):
    def msg(headers):
        r = api.client.get("/api/v2/me", headers=headers)
        return assert_error(r, 401, "unauthorized")["message"]

    assert "missing" in msg({})
    assert "malformed" in msg({"Authorization": "Basic abc"})
    assert "invalid token" in msg({"Authorization": "Bearer argus_unknown"})


# -- submit -------------------------------------------------------------------------------------
def test_submit_stores_the_yaml_verbatim_and_answers_queued(api, alice, backend):
    text = (
        "# alice's PPO run — café ☕\r\n"
        + api.spec(submission_id="my-own-submission-id").replace("\n", "\r\n")
        + "# trailing comment   \r\n\r\n"
    )
    r = api.post_yaml(alice, text.encode("utf-8"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"task_id", "state", "warnings"} and body["state"] == "QUEUED" and body["warnings"] == []
    tid = body["task_id"]
    assert re.fullmatch(TASK_ID_RE.format(user="alice"), tid), tid
    assert "my-own-submission-id" not in tid  # the YAML's submission_id is ignored

    got = api.get(alice, f"/api/v2/tasks/{tid}")
    assert got.status_code == 200, got.text
    task = got.json()
    assert set(task) >= DETAIL_KEYS
    # The exact text, comments and CRLF included, but no env_vars value (the names kept).
    assert task["jobspec_yaml"] == redact_spec_text(text) != text
    assert task["jobspec_yaml"].replace('"<redacted>"', "'0.2'") == text
    assert task["task_id"] == tid and task["user_id"] == "alice" and task["workload"] == "ppo"
    assert task["state"] == "QUEUED" and task["desired_resources"] == RESOURCES
    assert task["latest_attempt"] is None and task["failure_cause"] is None
    assert task["error_summary"] is None and task["next_run_at"] is None
    created = utc(task["created_at"])
    assert created.strftime("%Y%m%d-%H%M%S") == tid.split("-", 3)[3][:15]
    assert abs(created.timestamp() - time.time()) < 60
    assert utc(task["updated_at"]) == created

    # What the database holds is the same bytes.
    rows = backend.rows("SELECT jobspec_yaml, user_id, state FROM tasks WHERE task_id = :t", t=tid)
    assert rows == [{"jobspec_yaml": text, "user_id": "alice", "state": "QUEUED"}]
    attempts = api.get(alice, f"/api/v2/tasks/{tid}/attempts").json()
    assert attempts == {"task_id": tid, "attempts": []}
    summary = next(t for t in api.list_all(alice) if t["task_id"] == tid)
    assert set(summary) >= SUMMARY_KEYS
    assert summary["attempts"] == 0 and summary["desired_resources"] == RESOURCES


@pytest.mark.parametrize(
    "ctype",
    ["text/yaml", "application/x-yaml", "text/x-yaml", "application/yaml; charset=utf-8", "Application/YAML"],
)
def test_submit_accepts_yaml_content_types(api, alice, ctype):
    text = f"# sent as {ctype}\n" + api.spec()
    r = api.post_yaml(alice, text, content_type=ctype)
    assert r.status_code == 201, r.text
    assert api.get(alice, f"/api/v2/tasks/{r.json()['task_id']}").json()["jobspec_yaml"] == redact_spec_text(text)


@pytest.mark.parametrize(
    "ctype",
    [
        None,
        "application/json",
        "text/plain",
        "yaml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
    ],
)
def test_submit_refuses_other_content_types(api, alice, ctype):
    with nothing_stored(api, alice):
        assert_error(api.post_yaml(alice, api.spec(), content_type=ctype), 415, "unsupported_media_type")


def _padded(api, size: int) -> str:
    """A valid spec padded with a comment to exactly `size` bytes."""
    text = api.spec() + "# "
    return text + "x" * (size - len(text.encode()) - 1) + "\n"


def test_body_limit_with_content_length(api, alice):
    limit = api.max_body_bytes
    at_limit = _padded(api, limit)
    assert len(at_limit.encode()) == limit
    r = api.post_yaml(alice, at_limit)
    assert r.status_code == 201, r.text
    assert api.get(alice, f"/api/v2/tasks/{r.json()['task_id']}").json()["jobspec_yaml"] == redact_spec_text(at_limit)

    with nothing_stored(api, alice):
        for size in (limit + 1, 10 * limit):
            body = _padded(api, size).encode()
            r = api.post_yaml(alice, body)
            assert r.request.headers["content-length"] == str(size)
            assert_error(r, 413, "too_large")


def test_body_limit_with_chunked_transfer(api, alice):
    limit = api.max_body_bytes

    def chunks(data: bytes, size: int = 1000):
        for i in range(0, len(data), size):
            yield data[i : i + size]

    with nothing_stored(api, alice):
        for size in (limit + 1, 3 * limit):
            r = api.post_yaml(alice, chunks(_padded(api, size).encode()))
            assert "content-length" not in r.request.headers
            assert r.request.headers.get("transfer-encoding") == "chunked"
            assert_error(r, 413, "too_large")
    # A chunked body within the limit is accepted, and stored as sent.
    text = _padded(api, limit - 10)
    r = api.post_yaml(alice, chunks(text.encode()))
    assert r.status_code == 201, r.text
    assert api.get(alice, f"/api/v2/tasks/{r.json()['task_id']}").json()["jobspec_yaml"] == redact_spec_text(text)


@pytest.mark.parametrize(
    "fields,field,says",
    [
        ({"nnodes": 0}, "nnodes", "greater than or equal to 1"),
        ({"nnodes": "two"}, "nnodes", "integer"),
        ({"n_gpus_per_node": 65}, "n_gpus_per_node", "less than or equal to 64"),
        ({"workload": "dpo"}, "workload", "'ppo', 'grpo' or 'sft'"),
        ({"workload": None}, "workload", "'ppo', 'grpo' or 'sft'"),
        ({"train_file": None}, "train_file", "is required"),
        ({"nnode": 2}, "nnode", "did you mean 'nnodes'"),
        ({"trian_file": "/x"}, "trian_file", "did you mean 'train_file'"),
        ({"code_path": "relative/code"}, "code_path", "absolute"),
        ({"save_freq": 0}, "save_freq", "positive"),
        ({"env_vars": {"PYTHONPATH": "/x"}}, "env_vars.PYTHONPATH", "cannot be set"),
        ({"env_vars": {"1ABC": "x"}}, "env_vars", "not a valid environment variable name"),
        ({"env_vars": {"ABC\n": "x"}}, "env_vars", "not a valid environment variable name"),
        ({"overrides": ["trainer.nnodes=4"]}, "overrides[0]", "set by Argus"),
        ({"overrides": "data.train_batch_size=8"}, "overrides", "list"),
        ({"wandb": {"projekt": "x"}}, "wandb.projekt", "did you mean 'project'"),
    ],
)
def test_invalid_field_is_400_naming_it(api, alice, fields, field, says):
    with nothing_stored(api, alice):
        body = assert_error(api.post_yaml(alice, api.spec(**fields)), 400, "bad_request", field)
    assert says in problem(body, field), body


@pytest.mark.parametrize(
    "text,field",
    [
        ("workload: ppo\nnnodes: [1\n", "<yaml>"),
        ("workload: ppo\n  nnodes: 1\n", "<yaml>"),
        ("- workload: ppo\n", "<root>"),
    ],
)
def test_invalid_yaml_is_400(api, alice, text, field):
    with nothing_stored(api, alice):
        assert_error(api.post_yaml(alice, text), 400, "bad_request", field)


@pytest.mark.parametrize(
    "override,field,says",
    [
        ("data.no_such_key_here=1", "overrides", "no_such_key_here"),
        ("data.train_batch_size=abc", "overrides[data.train_batch_size]", "abc"),
    ],
)
def test_bad_hydra_override_is_400_naming_overrides(api, alice, override, field, says):
    with nothing_stored(api, alice):
        body = assert_error(api.post_yaml(alice, api.spec(overrides=[override])), 400, "bad_request", field)
    assert says in problem(body, field)


def _escapes(sandbox) -> dict[str, str]:
    """Paths inside common/ that lead out of it through a symlink (made once)."""
    outside = sandbox.shared_root / "outside"
    (outside / "model").mkdir(parents=True, exist_ok=True)
    (outside / "model" / "config.json").write_text("{}\n")
    (outside / "secret.parquet").write_bytes(sandbox.rl_train.read_bytes())
    common = sandbox.shared_root / "common"
    links = {
        common / "datasets" / "escape.parquet": outside / "secret.parquet",
        common / "models" / "escape-model": outside / "model",
        common / "code" / "escape-code": outside,
    }
    for link, target in links.items():
        if not link.is_symlink():
            link.symlink_to(target)
    return {
        "file": str(common / "datasets" / "escape.parquet"),
        "dir": str(common / "models" / "escape-model"),
        "code": str(common / "code" / "escape-code" / "verl"),
    }


@pytest.mark.parametrize(
    "field,value",
    [
        ("train_file", "/etc/hosts"),
        ("val_file", "{shared}/outside/secret.parquet"),
        ("model_id", "/opt/models/Qwen2.5-0.5B"),
        ("critic_model_id", "/opt/models/critic"),
        ("model_id", "./models/tiny-lm"),
        ("code_path", "{common}/../outside"),
        ("code_path", "{common}/code/verl/../../../outside"),
        ("train_file", "{common}/datasets/tiny/../../../../../../etc/passwd"),
        ("val_file", "{common}/../common-evil/x.parquet"),
        ("train_file", "{link_file}"),
        ("model_id", "{link_dir}"),
        ("code_path", "{link_code}"),
    ],
)
def test_inputs_outside_common_are_refused(api, alice, sandbox, field, value):
    links = _escapes(sandbox)
    common = str(sandbox.shared_root / "common")
    value = value.format(
        shared=sandbox.shared_root,
        common=common,
        link_file=links["file"],
        link_dir=links["dir"],
        link_code=links["code"],
    )
    with nothing_stored(api, alice):
        body = assert_error(api.post_yaml(alice, api.spec(**{field: value})), 400, "bad_request", field)
    assert [p["field"] for p in body["problems"]] == [field], body


def test_symlink_escape_is_refused_even_when_the_target_exists(api, alice, sandbox):
    links = _escapes(sandbox)
    assert os.path.exists(links["file"]) and os.path.islink(links["file"])
    with nothing_stored(api, alice):
        body = assert_error(
            api.post_yaml(alice, api.spec(train_file=links["file"], model_id=links["dir"])),
            400,
            "bad_request",
        )
    assert sorted(p["field"] for p in body["problems"]) == ["model_id", "train_file"]


# -- isolation ----------------------------------------------------------------------------------
def test_users_see_only_their_own_tasks(api):
    a, b = api.new_user("iso_a"), api.new_user("iso_b")
    ta = api.submit(a)
    tb = api.submit(b)
    unknown = f"mvp2-{a.user_id}-ppo-20000101-000000-0000"

    for method, template in (
        ("GET", "/api/v2/tasks/{}"),
        ("GET", "/api/v2/tasks/{}/attempts"),
        ("GET", "/api/v2/tasks/{}/logs"),
        ("POST", "/api/v2/tasks/{}:cancel"),
    ):
        theirs = api.client.request(method, template.format(ta), headers=b.headers)
        none = api.client.request(method, template.format(unknown), headers=b.headers)
        body = assert_error(theirs, 404, "not_found")
        nobody = assert_error(none, 404, "not_found")
        # The same answer as for an id that does not exist: nothing about A's task leaks.
        assert body == {**nobody, "message": nobody["message"].replace(unknown, ta)}, (body, nobody)
        assert theirs.headers["content-type"] == none.headers["content-type"]

    a_task = api.get(a, f"/api/v2/tasks/{ta}").json()
    assert a_task["state"] == "QUEUED"  # B's cancel did nothing
    assert [
        (e["from_state"], e["to_state"])
        for e in api.backend.rows("SELECT from_state, to_state FROM task_events WHERE task_id = :t ORDER BY id", t=ta)
    ] == [(None, "QUEUED")]

    assert ids(api.list_all(b)) == [tb]
    assert ids(api.list_all(a)) == [ta]
    assert {t["user_id"] for t in api.list_all(b)} == {b.user_id}
    qb = api.get(b, "/api/v2/queue").json()
    assert set(qb) == {"pools", "pools_error", "pending", "running"}
    # Free GPUs per pool, as admission counts them (Ray's free GPUs of schedulable nodes).
    assert qb["pools"] == {
        "-": {"nodes": 1, "gpus_total": 8, "gpus_free": 8},
        "h20": {"nodes": 2, "gpus_total": 8, "gpus_free": 5},
    }
    assert qb["pools_error"] is None
    assert ids(qb["pending"]) == [tb] and qb["running"] == []
    assert ids(api.get(a, "/api/v2/queue").json()["pending"]) == [ta]

    # The admin sees both, in the list and in the queue (oldest first there).
    seen = {t["task_id"]: t["user_id"] for t in api.list_all(api.admin)}
    assert seen[ta] == a.user_id and seen[tb] == b.user_id
    pending = api.get(api.admin, "/api/v2/queue").json()["pending"]
    mine = [p for p in pending if p["task_id"] in (ta, tb)]
    assert ids(mine) == [ta, tb]
    assert set(mine[0]) == {
        "task_id",
        "user_id",
        "state",
        "next_run_at",
        "pending_reason",
        "created_at",
        "priority",
        "estimated_start",
        "pool",
    }
    assert [(p["user_id"], p["state"]) for p in mine] == [(a.user_id, "QUEUED"), (b.user_id, "QUEUED")]
    assert api.get(api.admin, f"/api/v2/tasks/{ta}").json()["user_id"] == a.user_id


# -- list ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def listed(api):
    """A user with five tasks, the 2nd and 4th cancelled; ids in submission order."""
    user = api.new_user("lister")
    submitted = [api.submit(user) for _ in range(5)]
    for tid in (submitted[1], submitted[3]):
        assert api.post(user, f"/api/v2/tasks/{tid}:cancel").status_code == 200
    return user, submitted


def test_list_is_newest_first(api, listed):
    user, sub = listed
    r = api.get(user, "/api/v2/tasks")
    assert r.status_code == 200
    assert set(r.json()) == {"tasks", "next_cursor"}
    assert ids(r.json()["tasks"]) == sub[::-1] and r.json()["next_cursor"] is None
    for t in r.json()["tasks"]:
        assert set(t) >= SUMMARY_KEYS
        assert t["user_id"] == user.user_id and t["workload"] == "ppo"
        assert t["desired_resources"] == RESOURCES and t["attempts"] == 0
    states = {t["task_id"]: t["state"] for t in r.json()["tasks"]}
    assert [states[t] for t in sub] == ["QUEUED", "CANCELED", "QUEUED", "CANCELED", "QUEUED"]


@pytest.mark.parametrize(
    "params,expect",
    [
        ([("state", "CANCELED")], [3, 1]),
        ([("state", "QUEUED")], [4, 2, 0]),
        ([("state", "queued")], [4, 2, 0]),
        ([("state", "QUEUED,CANCELED")], [4, 3, 2, 1, 0]),
        ([("state", "QUEUED"), ("state", "CANCELED")], [4, 3, 2, 1, 0]),
        ([("state", " canceled , RUNNING ")], [3, 1]),
        ([("state", "RUNNING")], []),
        ([("state", "SUCCEEDED"), ("state", "FAILED,TIMEOUT")], []),
    ],
)
def test_list_state_filter(api, listed, params, expect):
    user, sub = listed
    r = api.get(user, "/api/v2/tasks", params=params)
    assert r.status_code == 200, r.text
    assert ids(r.json()["tasks"]) == [sub[i] for i in expect]


@pytest.mark.parametrize(
    "params,field",
    [
        ({"state": "BOGUS"}, "state"),
        ({"state": "QUEUED,BOGUS"}, "state"),
        ({"state": "CANCELLED"}, "state"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "-1"}, "cursor"),
    ],
)
def test_list_bad_query_is_400_naming_it(api, listed, params, field):
    user, _ = listed
    body = assert_error(api.get(user, "/api/v2/tasks", params=params), 400, "bad_request", field)
    if field == "state":
        assert "BOGUS" in problem(body, "state") or "CANCELLED" in problem(body, "state")


def test_list_limit_bounds_are_inclusive(api, listed):
    user, sub = listed
    assert ids(api.get(user, "/api/v2/tasks", params={"limit": 1}).json()["tasks"]) == [sub[4]]
    assert ids(api.get(user, "/api/v2/tasks", params={"limit": 500}).json()["tasks"]) == sub[::-1]


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 6])
def test_pagination_covers_every_task_once(api, listed, limit):
    user, sub = listed
    pages, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = api.get(user, "/api/v2/tasks", params=params)
        assert r.status_code == 200, r.text
        pages.append(ids(r.json()["tasks"]))
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
        assert len(pages) <= len(sub)
    flat = [t for page in pages for t in page]
    assert flat == sub[::-1]
    assert len(set(flat)) == len(flat)
    assert all(len(p) == limit for p in pages[:-1]) and 1 <= len(pages[-1]) <= limit
    assert len(pages) == -(-len(sub) // limit)


def test_pagination_with_a_state_filter(api, listed):
    user, sub = listed
    seen, cursor = [], None
    while True:
        params = {"limit": 1, "state": "QUEUED", **({"cursor": cursor} if cursor else {})}
        body = api.get(user, "/api/v2/tasks", params=params).json()
        seen += ids(body["tasks"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [sub[4], sub[2], sub[0]]


# -- cancel -------------------------------------------------------------------------------------
def test_cancel_queued_then_again_409_with_events(api, backend):
    user = api.new_user("canceller")
    tid = api.submit(user)
    r = api.post(user, f"/api/v2/tasks/{tid}:cancel")
    assert r.status_code == 200, r.text
    assert r.json() == {"task_id": tid, "state": "CANCELED"}
    task = api.get(user, f"/api/v2/tasks/{tid}").json()
    assert task["state"] == "CANCELED"
    assert utc(task["updated_at"]) >= utc(task["created_at"])

    body = assert_error(api.post(user, f"/api/v2/tasks/{tid}:cancel"), 409, "conflict")
    assert "CANCELED" in body["message"]
    assert api.get(user, f"/api/v2/tasks/{tid}").json()["state"] == "CANCELED"

    events = backend.rows(
        "SELECT from_state, to_state, reason, at FROM task_events WHERE task_id = :t ORDER BY id", t=tid
    )
    assert [(e["from_state"], e["to_state"]) for e in events] == [(None, "QUEUED"), ("QUEUED", "CANCELED")]
    assert user.user_id in events[1]["reason"]
    assert events[0]["at"] <= events[1]["at"]
    assert ids(api.get(user, "/api/v2/queue").json()["pending"]) == []
    assert ids(api.list_all(user, state="CANCELED")) == [tid]
    # The admin may cancel anyone's task; a finished one is 409 for the admin too.
    assert_error(api.post(api.admin, f"/api/v2/tasks/{tid}:cancel"), 409, "conflict")
    other = api.submit(user)
    assert api.post(api.admin, f"/api/v2/tasks/{other}:cancel").json() == {
        "task_id": other,
        "state": "CANCELED",
    }


def test_cancel_unknown_task_is_404(api):
    user = api.new_user("nobody")
    assert_error(api.post(user, "/api/v2/tasks/mvp2-nobody-ppo-20000101-000000-0000:cancel"), 404, "not_found")


# -- logs, health, docs -------------------------------------------------------------------------
def test_logs_before_any_attempt_is_404_saying_so(api):
    user = api.new_user("logger")
    tid = api.submit(user)
    for params in ({}, {"attempt": "latest"}, {"attempt": "1"}, {"tail": 10}):
        body = assert_error(api.get(user, f"/api/v2/tasks/{tid}/logs", params=params), 404, "not_found")
        assert "no attempt" in body["message"] and tid in body["message"], body
    assert_error(api.get(user, f"/api/v2/tasks/{tid}/logs", params={"tail": -1}), 400, "bad_request", "tail")
    assert_error(api.get(user, f"/api/v2/tasks/{tid}/logs", params={"attempt": "abc"}), 400, "bad_request", "attempt")


def test_healthz(api):
    r = api.client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["db"] == "ok"
    assert body["scheduler"]["running"] is False
    assert body["scheduler"]["last_tick_at"] is None


def test_docs_and_openapi(api):
    r = api.client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "swagger" in r.text.lower() and "/openapi.json" in r.text
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in (
        "/api/v2/tasks",
        "/api/v2/tasks/{task_id}",
        "/api/v2/tasks/{task_id}/attempts",
        "/api/v2/tasks/{task_id}/logs",
        "/api/v2/tasks/{task_id}:cancel",
        "/api/v2/queue",
        "/api/v2/users",
        "/api/v2/users/{user_id}/tokens",
        "/api/v2/users/{user_id}:disable",
        "/api/v2/me",
        "/healthz",
    ):
        assert path in paths, sorted(paths)
    assert {"get", "post"} <= set(paths["/api/v2/tasks"])
    assert "application/yaml" in paths["/api/v2/tasks"]["post"]["requestBody"]["content"]


# -- users --------------------------------------------------------------------------------------
def test_create_duplicate_user_is_409(api):
    uid = api.unique_id("dup")
    assert api.post(api.admin, "/api/v2/users", json={"user_id": uid}).status_code == 201
    assert_error(api.post(api.admin, "/api/v2/users", json={"user_id": uid}), 409, "conflict")
    users = api.get(api.admin, "/api/v2/users").json()["users"]
    assert [u["user_id"] for u in users].count(uid) == 1


@pytest.mark.parametrize(
    "user_id",
    [
        "Alice",
        "ALICE",
        "1alice",
        "_alice",
        "al-ice",
        "al.ice",
        "al ice",
        "ålice",
        "",
        "admin",
        "a" * 33,
        "alice\n",
        5,
        ["alice"],
        True,
    ],
)
def test_invalid_user_id_is_400_naming_user_id(api, user_id):
    before = api.get(api.admin, "/api/v2/users").json()["users"]
    body = assert_error(api.post(api.admin, "/api/v2/users", json={"user_id": user_id}), 400, "bad_request", "user_id")
    if user_id == "admin":
        assert "reserved" in problem(body, "user_id")
    assert api.get(api.admin, "/api/v2/users").json()["users"] == before


def test_longest_user_id_is_accepted(api):
    uid = "v" + os.urandom(16).hex()[:31]
    assert len(uid) == 32
    r = api.post(api.admin, "/api/v2/users", json={"user_id": uid})
    assert r.status_code == 201 and r.json()["user_id"] == uid
    token = api.post(api.admin, f"/api/v2/users/{uid}/tokens").json()["token"]
    r = api.client.post(
        "/api/v2/tasks",
        content=api.spec(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    assert re.fullmatch(TASK_ID_RE.format(user=uid), r.json()["task_id"])


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "user_id"),
        ({"user_id": None}, "user_id"),
        ([], "<body>"),
        ("alice", "<body>"),
        ({"user_id": "okay", "role": "admin"}, "role"),
    ],
)
def test_create_user_bad_body_is_400(api, body, field):
    assert_error(api.post(api.admin, "/api/v2/users", json=body), 400, "bad_request", field)


def test_token_or_disable_for_unknown_user_is_404(api, backend):
    tokens = backend.count("tokens")
    uid = api.unique_id("ghost")
    body = assert_error(api.post(api.admin, f"/api/v2/users/{uid}/tokens"), 404, "not_found")
    assert uid in body["message"]
    assert_error(api.post(api.admin, f"/api/v2/users/{uid}:disable"), 404, "not_found")
    assert backend.count("tokens") == tokens
    assert uid not in [u["user_id"] for u in api.get(api.admin, "/api/v2/users").json()["users"]]


# -- no bad input ever gets a 500 ----------------------------------------------------------------
@pytest.fixture(scope="module")
def odd_caller(api):
    """A user with one task (for the routes that take a task id)."""
    user = api.new_user("odd")
    return user, api.submit(user)


def _deep(depth: int) -> str:
    return "workload: " + "[" * depth + "]" * depth + "\n"


ODD_SUBMISSIONS: dict[str, Callable[[Any], Any]] = {
    "binary non-UTF-8": lambda api: b"\xff\xfe\x00\x81workload: ppo\n",
    "latin-1 text": lambda api: "workload: ppö\n".encode("latin-1"),
    "yaml list": lambda api: "- workload: ppo\n- nnodes: 1\n",
    "yaml scalar": lambda api: "42\n",
    "yaml string": lambda api: "just some words\n",
    "empty body": lambda api: b"",
    "only a comment": lambda api: "# nothing here\n",
    "huge integer nnodes": lambda api: api.spec(nnodes=10**30),
    "huge negative integer": lambda api: api.spec(n_gpus_per_node=-(10**40)),
    "huge float": lambda api: api.spec().replace("nnodes: 1", "nnodes: 1.0e+400"),
    "infinity": lambda api: api.spec().replace("nnodes: 1", "nnodes: .inf"),
    "deeply nested flow value": lambda api: _deep(1000),
    "deeply nested in env_vars": lambda api: api.spec(env_vars=None) + "env_vars: {A: " + "[" * 900 + "]" * 900 + "}\n",
    "self-referencing alias": lambda api: "a: &a [*a]\n",
    "self-referencing alias in a field": lambda api: api.spec(env_vars=None) + "env_vars: &e {A: *e}\n",
    "unicode workload": lambda api: api.spec(workload="ppö"),
    "unicode key": lambda api: api.spec() + "wörkload: ppo\n",
    "emoji path": lambda api: api.spec(train_file="/😀/data.parquet"),
    "lone surrogate in a key": lambda api: api.spec(env_vars=None) + 'env_vars: {"\\ud800": "x"}\n',
    "lone surrogate in an unknown key": lambda api: api.spec() + '"\\udfff": 1\n',
    "null byte raw": lambda api: "workload: ppo\x00\n",
    "null byte escaped": lambda api: api.spec() + 'experiment_name: "a\\0b"\n',
    "control characters in overrides": lambda api: api.spec(overrides=["data.x=\x07"]),
    "python tag": lambda api: "!!python/object/apply:os.system ['true']\n",
    "binary tag": lambda api: api.spec() + "experiment_name: !!binary aGVsbG8=\n",
    "non-string keys": lambda api: "1: 2\nnull: 3\n[a]: 4\n",
    "tab indentation": lambda api: "workload:\tppo\n\t- x\n",
    "BOM only": lambda api: "\ufeff".encode(),
    "many documents": lambda api: api.spec() + "---\n" + api.spec(),
    "date for an int": lambda api: api.spec().replace("nnodes: 1", "nnodes: 2026-01-01"),
    "bool for a string": lambda api: api.spec(model_id=True),
    "dict for a list": lambda api: api.spec(overrides={"a": 1}),
}


@pytest.mark.parametrize("case", list(ODD_SUBMISSIONS))
def test_odd_submissions_are_4xx(api, odd_caller, case):
    user, _ = odd_caller
    body = ODD_SUBMISSIONS[case](api)
    with nothing_stored(api, user):
        r = api.post_yaml(user, body)
        assert_client_error(r)


ODD_TASK_IDS = [
    "%00",
    "a%00b",
    "..",
    "...",
    "%2E%2E",
    "x" * 300,
    "%F0%9F%98%80",
    "%FF%FE",
    "%ED%A0%80",
    "a%20b",
    "a%0Ab",
    "'; DROP TABLE tasks; --",
    "%25",
    "*",
    "%5C",
    "mvp2-alice-ppo-20260101-000000-zzzz",
    "-",
    "%3A",
]


@pytest.mark.parametrize("task_id", ODD_TASK_IDS)
def test_odd_task_ids_in_the_path_are_4xx(api, odd_caller, task_id):
    user, _ = odd_caller
    with nothing_stored(api, user):
        for method, template in (
            ("GET", "/api/v2/tasks/{}"),
            ("GET", "/api/v2/tasks/{}/attempts"),
            ("GET", "/api/v2/tasks/{}/logs"),
            ("POST", "/api/v2/tasks/{}:cancel"),
        ):
            r = api.client.request(method, template.format(task_id), headers=user.headers)
            assert_client_error(r)
            assert r.status_code == 404, (method, template, r.text)
    assert api.backend.count("tasks") > 0  # the table is still there


@pytest.mark.parametrize("user_id", ["%00", "a%00b", "%FF", "x" * 300, "%ED%A0%80", "admin"])
def test_odd_user_ids_in_the_path_are_4xx(api, user_id):
    for path in (f"/api/v2/users/{user_id}/tokens", f"/api/v2/users/{user_id}:disable"):
        assert_client_error(api.post(api.admin, path))


ODD_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("logs", {"tail": -1}),
    ("logs", {"tail": "abc"}),
    ("logs", {"tail": 10**30}),
    ("logs", {"attempt": "abc"}),
    ("logs", {"attempt": "-1"}),
    ("logs", {"attempt": ""}),
    ("logs", {"attempt": "1.5"}),
    ("logs", {"attempt": "²"}),
    ("logs", {"attempt": "٣"}),
    ("logs", {"attempt": str(10**23)}),
    ("logs", {"attempt": "\x00"}),
    ("list", {"cursor": "²"}),
    ("list", {"cursor": "٣"}),
    ("list", {"cursor": str(10**23)}),
    ("list", {"cursor": str(2**31)}),
    ("list", {"cursor": "\x00"}),
    ("list", {"limit": 10**30}),
    ("list", {"limit": "1e3"}),
    ("list", {"state": "\x00"}),
    ("list", {"state": "😀"}),
]


@pytest.mark.parametrize(
    "route,params",
    ODD_QUERIES,
    ids=[f"{r}-{next(iter(p))}={next(iter(p.values()))!r}"[:40] for r, p in ODD_QUERIES],
)
def test_odd_query_parameters_never_500(api, odd_caller, route, params):
    user, tid = odd_caller
    path = f"/api/v2/tasks/{tid}/logs" if route == "logs" else "/api/v2/tasks"
    r = api.get(user, path, params=params)
    if r.status_code == 200:
        # A cursor past every task (or a digit in another script) may be read as a number.
        assert route == "list" and set(r.json()) == {"tasks", "next_cursor"}, r.text
    else:
        assert_client_error(r)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"\xff\xfe",
        b'{"user_id": "\\ud800"}',
        b'{"\\ud800": 1}',
        b'{"user_id": "a\\u0000b"}',
        b'{"user_id": ' + b"[" * 1500 + b"]" * 1500 + b"}",
        b"",
        b"null",
        b"1e999",
    ],
)
def test_odd_user_bodies_are_4xx(api, content):
    before = api.get(api.admin, "/api/v2/users").json()["users"]
    r = api.post(api.admin, "/api/v2/users", content=content, headers={"Content-Type": "application/json"})
    assert_client_error(r)
    assert api.get(api.admin, "/api/v2/users").json()["users"] == before


@pytest.mark.parametrize(
    "raw", [b"Bearer \xff\xfe", b"Bearer \x00", b"Bearer argus_\x00x", b"\xff", b"Bearer " + b"a" * 5000]
)
def test_odd_authorization_headers_are_401(api, raw):
    r = api.client.get("/api/v2/me", headers=[(b"authorization", raw)])
    assert_error(r, 401, "unauthorized")


def test_yaml_alias_expansion_is_cheap(api, odd_caller):
    """A few hundred bytes of nested aliases must not cost exponential time."""
    user, _ = odd_caller
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 7):
        prev, name = chr(96 + i), chr(97 + i)
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    text = "\n".join(levels) + "\n"
    assert len(text.encode()) < 400  # 10**7 strings once every alias is copied
    with nothing_stored(api, user):
        t0 = time.monotonic()
        r = api.post_yaml(user, text)
        elapsed = time.monotonic() - t0
    assert_client_error(r)
    assert elapsed < 2.0, f"a {len(text)}-byte body took {elapsed:.1f}s"


def test_method_not_allowed_and_unknown_route_keep_the_error_shape(api):
    assert_error(api.get(api.admin, "/api/v2/users/alice/tokens"), 405, "method_not_allowed")
    assert_error(api.client.delete("/api/v2/tasks", headers=api.admin.headers), 405, "method_not_allowed")
    assert_error(api.get(api.admin, "/api/v2/nothing-here"), 404, "not_found")
    assert_error(api.get(api.admin, "/api/v3/tasks"), 404, "not_found")


# -- persistence --------------------------------------------------------------------------------
def test_tasks_and_users_survive_a_restart(api, app_factory):
    user = api.new_user("persist")
    gone = api.new_user("persist_gone")
    text = "# kept across restarts\n" + api.spec()
    kept = api.submit(user, text)
    ended = api.submit(user)
    assert api.post(user, f"/api/v2/tasks/{ended}:cancel").status_code == 200
    assert api.post(api.admin, f"/api/v2/users/{gone.user_id}:disable").status_code == 200
    before_list = api.list_all(user)
    before_users = api.get(api.admin, "/api/v2/users").json()
    before_detail = api.get(user, f"/api/v2/tasks/{kept}").json()

    second = app_factory()  # a new app (and engines) over the same database
    try:
        r = second.get(f"/api/v2/tasks/{kept}", headers=user.headers)
        assert r.status_code == 200, r.text
        assert r.json() == before_detail and r.json()["jobspec_yaml"] == redact_spec_text(text)
        r = second.get(f"/api/v2/tasks/{ended}", headers=user.headers)
        assert r.json()["state"] == "CANCELED"
        listed = second.get("/api/v2/tasks", params={"limit": 500}, headers=user.headers).json()
        assert listed["tasks"] == before_list
        assert second.get("/api/v2/users", headers=api.admin.headers).json() == before_users
        assert second.get("/api/v2/me", headers=user.headers).json() == {
            "user_id": user.user_id,
            "is_admin": False,
        }
        assert_error(second.get("/api/v2/me", headers=gone.headers), 401, "unauthorized")
        assert_error(second.post(f"/api/v2/tasks/{ended}:cancel", headers=user.headers), 409, "conflict")
        # Writes through the new app are seen by the old one (one database).
        r = second.post(
            "/api/v2/tasks", content=api.spec(), headers={**user.headers, "Content-Type": "application/yaml"}
        )
        assert r.status_code == 201, r.text
        assert ids(api.list_all(user))[0] == r.json()["task_id"]
    finally:
        app_factory.close(second)
    assert api.get(user, f"/api/v2/tasks/{kept}").status_code == 200
    stored = api.get(user, f"/api/v2/tasks/{kept}").json()["jobspec_yaml"]
    assert yaml.safe_load(stored)["workload"] == "ppo"
