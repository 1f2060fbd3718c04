"""Fixtures of the console's browser tests: Debian's Chromium, once per session, and one real
`argus server` on the real local Ray cluster for the whole of tests/browser.

pytest-playwright provides `context` and `page` (a fresh context per test); its Playwright and
browser are started here once for this package (not for the session: sync Playwright keeps an
event loop running in the main thread until it stops, and later tests run asyncio loops of their
own), pointed at `/usr/bin/chromium` (installed by `make venv`; Playwright never downloads a
browser), and every context at the server (`page.goto("/ui/login")`). These tests start Ray and a
server: run them alone under the shared lock, as the other Ray tests,
`flock /tmp/argus-ray-tests.lock .venv/bin/python -m pytest -q tests/browser`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserType, Playwright, sync_playwright

from argus.cluster import local
from argus.testing.server import ServerProcess

from .support import CHROMIUM, VIEWPORT, Console

ADMIN_TOKEN = "console-admin-token"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.ray)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failing test's report ends with the console server's log, where a 500's cause is."""
    report = yield
    found = getattr(item, "funcargs", {}).get("console")
    if report.failed and isinstance(found, Console):
        report.sections.append(("argus server log (last lines)", found.log_tail()))
    return report


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Playwright for tests/browser only: stopped (its event loop with it) when they end."""
    pw = sync_playwright().start()
    yield pw
    pw.stop()


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    return getattr(playwright, browser_name)


@pytest.fixture(scope="package")
def launch_browser(browser_type_launch_args: dict[str, Any], browser_type: BrowserType) -> Callable[..., Browser]:
    return lambda **kwargs: browser_type.launch(**{**browser_type_launch_args, **kwargs})


@pytest.fixture(scope="package")
def browser(launch_browser: Callable[..., Browser]) -> Iterator[Browser]:
    launched = launch_browser()
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, headless; without its sandbox when run as root (it refuses to start)."""
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing: `make venv` installs Debian's chromium"
    args = {"headless": True, **browser_type_launch_args, "executable_path": CHROMIUM}
    if os.geteuid() == 0:
        args["args"] = [*args.get("args", []), "--no-sandbox"]
    return args


@pytest.fixture(scope="package")
def console(ray_cluster, tmp_path_factory) -> Iterator[Console]:
    """A real `argus server` on the session's Ray cluster, for every test of tests/browser."""
    from argus.testing.cluster import quiesce

    quiesce(ray_cluster)
    work = tmp_path_factory.mktemp("console")
    server = ServerProcess(local.config_file(ray_cluster.shared_root), work, ADMIN_TOKEN)
    t0 = time.monotonic()
    server.start()
    print(f"\nargus server for the console up in {time.monotonic() - t0:.1f}s at {server.url}")
    try:
        yield Console(server, ADMIN_TOKEN)
    finally:
        server.stop()


@pytest.fixture
def browser_context_args(console: Console) -> dict[str, Any]:
    """Every page's relative URLs go to the console's server."""
    return {"base_url": console.url, "viewport": VIEWPORT}
