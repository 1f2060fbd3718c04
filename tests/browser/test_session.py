"""Logging in and out of the console in a real browser, against a real `argus server`.

A good token lands on the tasks page with the user's name in the nav; a wrong one is refused
(401, `Invalid token` in an alert) and no cookie is set. The session cookie is HttpOnly and
SameSite=Strict and never the token; the token is in no URL and no page. Logging out revokes the
session (the old cookie opens nothing), and a POST without the CSRF token is refused. Run under
the shared lock: `flock /tmp/argus-ray-tests.lock .venv/bin/python -m pytest -q tests/browser`.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, Request, expect

from .support import SESSION_COOKIE, Console, login, logout, session_cookie

TASKS_URL = re.compile(r"/ui/tasks$")
LOGIN_URL = re.compile(r"/ui/login$")
CSRF_REFUSED = "CSRF token missing or invalid"


def test_a_good_token_lands_on_the_tasks_page_with_the_users_name(console: Console, page: Page):
    alice = console.user("alice")
    answer = login(page, alice.token)
    assert answer is not None and answer.status == 200, answer and answer.text()
    expect(page).to_have_url(TASKS_URL)
    expect(page.get_by_role("banner")).to_contain_text(alice.name)
    nav = page.get_by_role("navigation")
    for link in ("Tasks", "Submit", "Queue", "Nodes", "Usage"):
        expect(nav.get_by_role("link", name=link, exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="Users", exact=True)).to_have_count(0)  # the admin's only
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def test_the_admin_sees_the_users_link(console: Console, page: Page):
    login(page, console.admin_token)
    expect(page).to_have_url(TASKS_URL)
    expect(page.get_by_role("navigation").get_by_role("link", name="Users", exact=True)).to_be_visible()


def test_a_wrong_token_is_refused_with_a_message_and_no_cookie(console: Console, page: Page):
    wrong = "not-a-token-of-anyone-0123456789"
    answer = login(page, wrong)
    assert answer is not None and answer.status == 401, answer and answer.status
    expect(page).to_have_url(LOGIN_URL)
    expect(page.get_by_role("alert")).to_contain_text("Invalid token")
    expect(page.get_by_label("Token")).to_be_visible()  # the form again
    expect(page.get_by_label("Token")).to_have_value("")  # what was typed is not sent back
    assert wrong not in page.content()
    assert session_cookie(page.context) is None
    page.goto("/ui/tasks")
    expect(page).to_have_url(LOGIN_URL)


def test_the_session_cookie_is_httponly_strict_and_not_the_token(console: Console, page: Page):
    bob = console.user("bob")
    login(page, bob.token)
    expect(page).to_have_url(TASKS_URL)
    cookie = session_cookie(page.context)
    assert cookie is not None, page.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui"), cookie
    assert bob.token not in cookie["value"]
    # Expiring: a browser-session cookie, or one that ends within the server's session lifetime.
    assert cookie["expires"] == -1 or time.time() < cookie["expires"] <= time.time() + 13 * 3600, cookie
    assert SESSION_COOKIE not in page.evaluate("document.cookie")  # no script can read it


def test_the_token_is_in_no_url_and_no_page(console: Console, page: Page):
    carol = console.user("carol")
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    login(page, carol.token)
    expect(page).to_have_url(TASKS_URL)
    pages = [page.content()]
    for path in ("/ui/tasks", "/ui/login"):
        page.goto(path)
        pages.append(page.content())
    assert [r.url for r in requests if carol.token in r.url] == []
    assert [p for p in pages if carol.token in p] == []
    # The only request that carries it is the login form's POST body.
    assert [r.url for r in requests if carol.token in (r.post_data or "")] == [f"{console.url}/ui/login"]
    assert carol.token not in console.server.log.read_text(errors="replace")


def test_logout_returns_to_the_login_page_and_the_old_cookie_opens_nothing(console: Console, page: Page):
    dave = console.user("dave")
    login(page, dave.token)
    expect(page).to_have_url(TASKS_URL)
    old = session_cookie(page.context)
    assert old is not None
    logout(page)
    expect(page).to_have_url(LOGIN_URL)
    # The browser is given the old cookie back: the session was revoked on the server.
    page.context.add_cookies([old])  # type: ignore[list-item]
    page.goto("/ui/tasks")
    expect(page).to_have_url(LOGIN_URL)
    answer = page.request.get("/ui/tasks", max_redirects=0)
    assert answer.status == 303 and answer.headers["location"].endswith("/ui/login"), answer.headers


def test_a_post_without_the_csrf_token_is_refused(console: Console, page: Page):
    erin = console.user("erin")
    # Logging in needs the login form's CSRF token too: a bare POST of a good token is refused.
    bare = page.request.post("/ui/login", form={"token": erin.token}, max_redirects=0)
    assert bare.status == 403 and CSRF_REFUSED in bare.text(), (bare.status, bare.text())
    assert session_cookie(page.context) is None

    login(page, erin.token)
    expect(page).to_have_url(TASKS_URL)
    for form in ({}, {"csrf": "forged-csrf-token"}):  # the session cookie rides along, no good token
        refused = page.request.post("/ui/logout", form=form, max_redirects=0)
        assert refused.status == 403 and CSRF_REFUSED in refused.text(), (form, refused.status, refused.text())
    # Nothing happened: the session is still good.
    page.goto("/ui/tasks")
    expect(page).to_have_url(TASKS_URL)
    expect(page.get_by_role("banner")).to_contain_text(erin.name)
