"""Helpers for the console's browser tests: users and tokens through the API, logging in
through the form, reading the session cookie, and the README's screenshots.

`Console` is a real `argus server` (started once for tests/browser by `conftest.console`);
`Console.user()` makes a user with a fresh token; `login(page, token)` fills the `Token` field
of `/ui/login` and clicks `Log in` as a person would. `screenshot(page, name)` saves
`docs/console-<name>.png` only when `ARGUS_UI_SCREENSHOTS=1` (a run made for the README, not
every `make test`).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, Response

from argus.client.sdk import ArgusClient
from argus.testing.server import ServerProcess

CHROMIUM = "/usr/bin/chromium"
SESSION_COOKIE = "argus_session"
SCREENSHOTS_ENV = "ARGUS_UI_SCREENSHOTS"
DOCS = Path(__file__).resolve().parents[2] / "docs"
VIEWPORT = {"width": 1280, "height": 800}


@dataclass(frozen=True)
class ConsoleUser:
    """A user of the console: their name, their plain token and an API client holding it."""

    name: str
    token: str
    api: ArgusClient


@dataclass
class Console:
    """The server under test: its URL, the admin's token and client."""

    server: ServerProcess
    admin_token: str
    _serial: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin(self) -> ArgusClient:
        return ArgusClient(self.url, self.admin_token)

    def user(self, stem: str = "user") -> ConsoleUser:
        """A new user (`<stem>_<n>`, unique on this server) with a fresh token."""
        name = f"{re.sub(r'[^a-z0-9_]', '_', stem.lower())[:24]}_{next(self._serial)}"
        admin = self.admin
        admin.create_user(name)
        token = admin.issue_token(name)["token"]
        return ConsoleUser(name, token, ArgusClient(self.url, token))

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for a failing assertion's message."""
        return self.server.log.read_text(errors="replace")[-chars:]


def login(page: Page, token: str) -> Response | None:
    """Log in through the form: fill `Token`, click `Log in`; returns the answer to the POST
    (a 303 followed to `/ui/tasks` on success, the 401 page on a wrong token)."""
    page.goto("/ui/login")
    page.get_by_label("Token").fill(token)
    with page.expect_navigation() as answer:
        page.get_by_role("button", name="Log in").click()
    return answer.value


def logout(page: Page) -> None:
    """Click `Log out` in the nav and wait for the login page."""
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()


def session_cookie(context: BrowserContext) -> dict[str, Any] | None:
    """The console's session cookie as the browser holds it (None when there is none)."""
    found = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    return dict(found[0]) if found else None


def screenshot(page: Page, name: str) -> Path | None:
    """Save the page as `docs/console-<name>.png` when `ARGUS_UI_SCREENSHOTS=1`, else nothing.

    The README's pictures are made by a run with that variable set, e.g.
    `ARGUS_UI_SCREENSHOTS=1 .venv/bin/python -m pytest -q tests/browser`."""
    if os.environ.get(SCREENSHOTS_ENV) != "1":
        return None
    DOCS.mkdir(exist_ok=True)
    path = DOCS / f"console-{name}.png"
    page.set_viewport_size(VIEWPORT)
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path
