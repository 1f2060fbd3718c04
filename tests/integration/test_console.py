"""The console's sessions and pages over HTTP (the app in-process, a real database: SQLite, and
PostgreSQL when `ARGUS_TEST_DATABASE_URL` is set). The same pages in a real browser are
`tests/browser/`.

A login needs the login form's CSRF token and a good token; the session cookie is HttpOnly,
SameSite=Strict and signed, and the token never comes back; logout and disabling the user end the
session; every POST needs the session's CSRF token; another user's task is not found; names and
reasons are escaped; every page carries the CSP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from api_support import Backend, World, backend, fake_ray_world, sandbox
from fastapi.testclient import TestClient

from argus.testing.sandbox import Sandbox


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, backend: Backend) -> Iterator[World]:
    yield from fake_ray_world(sandbox, backend)


def browser(world: World) -> TestClient:
    """A client of the same app with a cookie jar of its own (one browser)."""
    return TestClient(world.client.app, base_url="http://testserver", follow_redirects=False)


def login(world: World, token: str) -> tuple[TestClient, str]:
    """Log in through the form; returns the browser and the page's CSRF token."""
    b = browser(world)
    form = b.get("/ui/login")
    assert form.status_code == 200 and 'type="password"' in form.text
    login_csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text).group(1)
    r = b.post("/ui/login", data={"token": token, "csrf": login_csrf})
    assert r.status_code == 303 and r.headers["location"] == "/ui/tasks", r.text
    page = b.get("/ui/tasks")
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    return b, csrf


def test_login_gives_a_strict_httponly_signed_cookie_and_never_shows_the_token(world):
    user = world.new_user("cl")
    b = browser(world)
    assert b.get("/ui/tasks").headers["location"] == "/ui/login"  # not logged in: to the login form
    form = b.get("/ui/login")
    login_csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text).group(1)
    r = b.post("/ui/login", data={"token": user.token, "csrf": login_csrf})
    cookie = r.headers["set-cookie"]
    assert "argus_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/ui" in cookie and user.token not in cookie
    page = b.get("/ui/tasks")
    assert user.user_id in page.text and user.token not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # A cookie whose signature is not the server's is no session.
    value = b.cookies.get("argus_session")
    forged = browser(world)
    forged.cookies.set("argus_session", value[:-4] + "0000", path="/ui")
    assert forged.get("/ui/tasks").status_code == 303


def test_a_wrong_token_or_a_login_without_its_csrf_token_is_refused(world):
    b = browser(world)
    form = b.get("/ui/login")
    login_csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.text).group(1)
    wrong = b.post("/ui/login", data={"token": "not-a-token", "csrf": login_csrf})
    assert wrong.status_code == 401 and 'role="alert">Invalid token<' in wrong.text
    assert "argus_session" not in wrong.headers.get("set-cookie", "")
    user = world.new_user("cx")
    no_csrf = browser(world).post("/ui/login", data={"token": user.token})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text


def test_posts_need_the_sessions_csrf_token_and_logout_ends_the_session(world):
    user = world.new_user("co")
    b, csrf = login(world, user.token)
    refused = b.post("/ui/logout", data={"csrf": "0" * 64})
    assert refused.status_code == 403 and "CSRF token missing or invalid" in refused.text
    assert b.get("/ui/tasks").status_code == 200  # still logged in
    out = b.post("/ui/logout", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert b.get("/ui/tasks").status_code == 303
    assert browser(world).post("/ui/logout", data={"csrf": csrf}).status_code == 401


def test_disabling_the_user_ends_their_console_session_at_once(world):
    user = world.new_user("cd")
    b, _ = login(world, user.token)
    assert world.post(world.admin, f"/api/v2/users/{user.user_id}:disable").status_code == 200
    assert b.get("/ui/tasks").status_code == 303


def test_the_task_list_shows_only_the_callers_tasks_and_escapes_what_users_wrote(world):
    alice, bob = world.new_user("ca"), world.new_user("cb")
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    tid = world.submit(alice, world.spec(experiment_name=evil))
    mine = world.submit(bob)
    a, _ = login(world, alice.token)
    page = a.get("/ui/tasks").text
    assert f'data-task-id="{tid}"' in page and mine not in page
    b, _ = login(world, bob.token)
    assert tid not in b.get("/ui/tasks").text
    admin, _ = login(world, world.admin.token)
    everyone = admin.get("/ui/tasks").text
    assert tid in everyone and mine in everyone and ">Users<" in everyone
    assert ">Users<" not in a.get("/ui/tasks").text
    assert "<script>alert" not in everyone and "<img src=x" not in everyone


def test_a_live_part_polling_after_logout_sends_the_whole_page_to_the_login(world):
    user = world.new_user("ch")
    b, csrf = login(world, user.token)
    assert b.post("/ui/logout", headers={"X-CSRF-Token": csrf}).status_code == 303
    r = b.get("/ui/tasks", headers={"HX-Request": "true"})
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/ui/login"


def test_a_new_admin_token_ends_the_admins_console_sessions_and_expired_rows_go(world):
    admin, _ = login(world, world.admin.token)
    assert admin.get("/ui/users").status_code == 200
    auth = world.client.app.state.auth
    old = auth.admin_token
    auth.admin_token = "a-new-admin-token-" + "9" * 20
    try:
        assert admin.get("/ui/tasks").status_code == 303  # logged in with the old token: ended
    finally:
        auth.admin_token = old
    store = world.client.app.state.console.store
    now = world.clock()
    store.create("e" * 64, "nobody", False, "c" * 64, now - 100, now - 1)
    assert store.get("e" * 64) is not None
    login(world, world.new_user("cp").token)
    assert store.get("e" * 64) is None  # expired sessions are deleted as new ones are made
