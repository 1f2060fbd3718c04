"""Nothing of another user through the API, and tokens that stay revoked, over a real database
(SQLite, and PostgreSQL when `ARGUS_TEST_DATABASE_URL` is set).

The scheduler runs one pass at a time (`tick`) over faked Ray jobs and nodes, so that pending
reasons and node placements are the real ones the API shows: a user's reason names only their
own tasks, `/api/v2/nodes` lists other users' tasks only to the admin (a user sees a count),
and a task's `jobspec_yaml` shows env var names, never their values. Disabling a user revokes
every token they have; `:enable` brings the user back without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import ADMIN_TOKEN, backend, fake_ray_world, sandbox
from api_support import World as FakeRayWorld


class World(FakeRayWorld):
    def task(self, who, tid: str) -> dict[str, Any]:
        r = self.get(who, f"/api/v2/tasks/{tid}")
        assert r.status_code == 200, r.text
        return r.json()

    def nodes(self, who) -> dict[str, dict[str, Any]]:
        r = self.get(who, "/api/v2/nodes")
        assert r.status_code == 200, r.text
        return {n["id"]: n for n in r.json()["nodes"]}


@pytest.fixture
def world(sandbox, backend) -> Iterator[World]:
    """A fresh app and scheduler per test (the cluster's GPUs are the test's own); the database
    is the module's, so each test uses users of its own."""
    yield from fake_ray_world(sandbox, backend, world=World)


def _cancel_all(world: World, *pairs) -> None:
    for who, tid in pairs:
        world.post(who, f"/api/v2/tasks/{tid}:cancel")


# -- pending reasons ----------------------------------------------------------------------------
def test_a_reason_names_a_blocking_task_only_to_its_owner(world):
    alice, bob = world.new_user("alice"), world.new_user("bob")
    holder = world.submit(bob, world.spec(n_gpus_per_node=2, time_limit="1h"))
    world.tick()
    world.jobs.run(f"{holder}--a01")
    big = world.submit(bob, world.spec(nnodes=2, n_gpus_per_node=4))  # waits for holder: reserved
    r = world.post(world.admin, f"/api/v2/tasks/{big}:priority", json={"priority": 900})
    assert r.status_code == 200, r.text
    mine = world.submit(alice, world.spec(n_gpus_per_node=2, time_limit="3h"))  # would delay big
    his = world.submit(bob, world.spec(n_gpus_per_node=2, time_limit="3h"))  # the same, bob's
    try:
        world.tick()
        assert world.task(bob, big)["pending_code"] == "Resources"
        task = world.task(alice, mine)
        assert task["pending_code"] == "Priority", task
        assert task["pending_reason"].startswith(
            "Priority: would delay a higher-priority task, reserved to start by "
        ), task
        assert bob.user_id not in repr(task) and big not in repr(task)
        queue = world.get(alice, "/api/v2/queue").json()
        assert bob.user_id not in repr(queue) and big not in repr(queue)
        # bob's own reason names his own reserved task.
        assert f"would delay {big}" in world.task(bob, his)["pending_reason"]
    finally:
        _cancel_all(world, (bob, holder), (bob, big), (alice, mine), (bob, his))


# -- nodes --------------------------------------------------------------------------------------
def test_nodes_list_other_users_tasks_only_to_the_admin(world):
    alice, bob = world.new_user("alice"), world.new_user("bob")
    mine = world.submit(alice, world.spec(nnodes=2, n_gpus_per_node=2))  # both on each node
    theirs = world.submit(bob, world.spec(nnodes=2, n_gpus_per_node=2))
    world.tick()
    try:
        for tid in (mine, theirs):
            world.jobs.run(f"{tid}--a01")
        placed = {n["id"]: set(n["running_tasks"]) for n in world.nodes(world.admin).values()}
        assert placed == {"w1": {mine, theirs}, "w2": {mine, theirs}}, placed  # the admin sees all
        assert all(n["running_tasks_other"] == 0 for n in world.nodes(world.admin).values())
        for who, own, other in ((alice, mine, theirs), (bob, theirs, mine)):
            seen = world.nodes(who)
            assert other not in repr(seen) and (bob if who is alice else alice).user_id not in repr(seen)
            for node_id, tasks in placed.items():
                assert seen[node_id]["running_tasks"] == sorted(tasks & {own})
                assert seen[node_id]["running_tasks_other"] == len(tasks - {own})
                one = world.get(who, f"/api/v2/nodes/{node_id}").json()
                assert (one["running_tasks"], one["running_tasks_other"]) == (
                    sorted(tasks & {own}),
                    len(tasks - {own}),
                )
    finally:
        _cancel_all(world, (alice, mine), (bob, theirs))


# -- jobspec_yaml --------------------------------------------------------------------------------
def test_jobspec_yaml_shows_env_names_not_values(world, backend):
    alice = world.new_user("alice")
    text = "# with a key\n" + world.spec(env_vars={"WANDB_API_KEY": "k-very-secret", "STEPS": 3})
    tid = world.submit(alice, text)
    for who in (alice, world.admin):
        shown = world.task(who, tid)["jobspec_yaml"]
        assert "k-very-secret" not in shown
        assert 'WANDB_API_KEY: "<redacted>"' in shown and 'STEPS: "<redacted>"' in shown
        assert shown.startswith("# with a key\n")
    # The database keeps the text as sent (the scheduler submits from it).
    assert backend.rows("SELECT jobspec_yaml FROM tasks WHERE task_id = :t", t=tid)[0]["jobspec_yaml"] == text
    world.post(alice, f"/api/v2/tasks/{tid}:cancel")


# -- tokens --------------------------------------------------------------------------------------
def _status(world: World, token: str) -> int:
    return world.client.get("/api/v2/me", headers={"Authorization": f"Bearer {token}"}).status_code


def _issue(world: World, user_id: str):
    return world.post(world.admin, f"/api/v2/users/{user_id}/tokens")


def test_disable_revokes_every_token_and_enable_does_not_bring_them_back(world, backend):
    user = world.new_user("carol")
    second = _issue(world, user.user_id).json()["token"]
    assert _status(world, user.token) == _status(world, second) == 200  # both remembered now
    r = world.post(world.admin, f"/api/v2/users/{user.user_id}:disable")
    assert r.status_code == 200 and r.json() == {"user_id": user.user_id, "state": "DISABLED"}
    assert _status(world, user.token) == _status(world, second) == 401  # not served from memory
    assert backend.rows("SELECT COUNT(*) AS n FROM tokens WHERE user_id = :u", u=user.user_id)[0]["n"] == 0

    r = world.post(world.admin, f"/api/v2/users/{user.user_id}:enable")
    assert r.status_code == 200 and r.json() == {"user_id": user.user_id, "state": "ACTIVE"}
    users = {u["user_id"]: u["state"] for u in world.get(world.admin, "/api/v2/users").json()["users"]}
    assert users[user.user_id] == "ACTIVE"
    assert _status(world, user.token) == _status(world, second) == 401  # still revoked
    fresh = _issue(world, user.user_id)
    assert fresh.status_code == 201
    assert _status(world, fresh.json()["token"]) == 200
    # Enabling an active user changes nothing: its new token keeps working.
    assert world.post(world.admin, f"/api/v2/users/{user.user_id}:enable").status_code == 200
    assert _status(world, fresh.json()["token"]) == 200


def test_a_token_slipped_in_while_disabled_does_not_survive_enable(world, backend):
    """A token issued in a race with `disable` (stored for a disabled user) is revoked by the
    re-enable, and while disabled no token can be issued at all."""
    user = world.new_user("dave")
    assert world.post(world.admin, f"/api/v2/users/{user.user_id}:disable").status_code == 200
    assert _issue(world, user.user_id).status_code == 409
    store = world.client.app.state.users.store
    assert store.issue_token(user.user_id, 0.0) is None  # the store refuses too
    from argus.store.schema import tokens
    from argus.store.users import hash_token

    with store.db.write.begin() as conn:
        conn.execute(
            tokens.insert().values(token_hash=hash_token("argus_slipped"), user_id=user.user_id, created_at=0.0)
        )
    assert _status(world, "argus_slipped") == 401
    assert world.post(world.admin, f"/api/v2/users/{user.user_id}:enable").status_code == 200
    assert _status(world, "argus_slipped") == 401


def test_enable_is_the_admins_and_names_a_known_user(world):
    user = world.new_user("erin")
    r = world.post(user, f"/api/v2/users/{user.user_id}:enable")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    for uid in ("nobody_here", "Bad-Id", "admin"):
        r = world.post(world.admin, f"/api/v2/users/{uid}:enable")
        assert r.status_code == 404 and r.json()["error"] == "not_found", (uid, r.text)
    assert "/api/v2/users/{user_id}:enable" in world.client.get("/openapi.json").json()["paths"]


def test_cli_and_sdk_enable_a_user_without_their_old_tokens(world, monkeypatch):
    """`argus users disable|enable USER` and the SDK, over the real app (no network)."""
    from argus.client import service_cli
    from argus.client.cli import app as cli_app
    from argus.client.sdk import ArgusAPIError, ArgusClient
    from argus.testing.cli import invoke

    transport = world.client._transport  # the TestClient's: requests go to the app in-process

    def client(token: str) -> ArgusClient:
        return ArgusClient("http://testserver", token, transport=transport)

    monkeypatch.setattr(service_cli, "make_client", lambda url, token: client(token))
    user = world.new_user("frank")
    args = ("--url", "http://testserver", "--token", ADMIN_TOKEN)
    out = invoke(cli_app, "users", "disable", user.user_id, *args)
    assert out.exit_code == 0 and out.out_text.strip() == f"{user.user_id}: DISABLED", out.err_text
    out = invoke(cli_app, "users", "enable", user.user_id, *args)
    assert out.exit_code == 0 and out.out_text.strip() == f"{user.user_id}: ACTIVE", out.err_text
    assert invoke(cli_app, "users", "enable", user.user_id, *args, "--json").json() == {
        "user_id": user.user_id,
        "state": "ACTIVE",
    }
    missing = invoke(cli_app, "users", "enable", "nobody_at_all", *args)
    assert missing.exit_code == 1 and "404 not_found" in missing.err_text
    with pytest.raises(ArgusAPIError) as err:
        client(user.token).me()
    assert err.value.status == 401  # the old token stayed revoked

    admin = client(ADMIN_TOKEN)
    admin.disable_user(user.user_id)
    assert admin.enable_user(user.user_id) == {"user_id": user.user_id, "state": "ACTIVE"}
    assert client(admin.issue_token(user.user_id)["token"]).me()["user_id"] == user.user_id
