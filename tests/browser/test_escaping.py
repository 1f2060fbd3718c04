"""What users write is shown as text in the console, never run, in a real browser against a
real `argus server` on the real local Ray cluster.

A task whose experiment name holds `<script>` and `<img onerror>` runs: its page shows both as
visible text in its TaskSpec, and its driver log, which prints the experiment name, shows the
line as text while it arrives over server-sent events (and in the download, as plain text). A
reason holding both (a node's drain reason) is shown as text on the nodes page:
`test_nodes.test_the_admin_drains_a_node_the_grid_shows_it_and_undrains_it`. In every case
`window.__pwned` stays unset, no `<img src=x>` is made and no dialog opens; every /ui page
carries a Content-Security-Policy allowing only the console's own scripts.
Run under the shared lock: `flock /tmp/argus-ray-tests.lock .venv/bin/python -m pytest -q
tests/browser`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from argus.testing.sandbox import Sandbox

from .checks import IMG, SCRIPT, assert_nothing_ran, cancel, fast_task, watch
from .support import Console, ConsoleUser, login

EXPERIMENT = f"x {SCRIPT} {IMG}"
RUN_TIMEOUT_MS = 90_000


def csp_allows_only_own_scripts(policy: str | None) -> bool:
    directives = {d.split()[0]: d.split()[1:] for d in (policy or "").split(";") if d.strip()}
    scripts = directives.get("script-src", directives.get("default-src", []))
    return "'self'" in scripts and "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts


@pytest.fixture(scope="module")
def marked(console: Console, sandbox: Sandbox) -> Iterator[tuple[ConsoleUser, str]]:
    """A user and their task whose experiment name holds both payloads; it runs in seconds
    and its driver log prints the name (`verl-sim: trainer=... experiment_name=...`)."""
    mallory = console.user("mallory")
    tid = mallory.api.submit(fast_task(sandbox, experiment_name=EXPERIMENT))["task_id"]
    yield mallory, tid
    cancel(mallory.api, tid)


def open_watched(page: Page, path: str) -> list[str]:
    """Open `path`; returns the list that collects script errors and dialogs from then on."""
    seen = watch(page)
    answer = page.goto(path)
    assert answer is not None and answer.status == 200, answer and answer.status
    assert csp_allows_only_own_scripts(answer.headers.get("content-security-policy")), answer.headers
    return seen


def test_markup_in_log_lines_is_text_in_the_live_log(marked, page: Page):
    mallory, tid = marked
    login(page, mallory.token)
    seen = open_watched(page, f"/ui/tasks/{tid}")  # opened while it waits or runs: the log follows
    log = page.locator("#log")
    expect(log).to_contain_text(f"experiment_name={EXPERIMENT} ", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#task-state")).to_have_text("SUCCEEDED", timeout=RUN_TIMEOUT_MS)
    expect(log).to_contain_text("verl-sim: training finished", timeout=30_000)
    assert log.locator("*").count() == 0  # only text inside the <pre>
    assert_nothing_ran(page, seen)
    download = page.request.get(f"/ui/tasks/{tid}/log?attempt=1")
    assert download.headers["content-type"].startswith("text/plain"), download.headers
    assert f"experiment_name={EXPERIMENT} " in download.text()


def test_markup_in_an_experiment_name_is_text_on_the_task_page(marked, page: Page):
    mallory, tid = marked
    login(page, mallory.token)
    seen = open_watched(page, f"/ui/tasks/{tid}")
    spec = page.locator("#task-spec")
    expect(spec).to_contain_text(f"experiment_name: {EXPERIMENT}")
    assert spec.locator("*").count() == 0
    expect(page.locator("#log")).to_contain_text(EXPERIMENT, timeout=30_000)  # the whole log, at once
    assert_nothing_ran(page, seen)


def test_every_console_page_carries_the_csp(console: Console, page: Page):
    answer = page.goto("/ui/login")
    assert answer is not None and answer.status == 200
    assert csp_allows_only_own_scripts(answer.headers.get("content-security-policy")), answer.headers
    # No inline script or inline handler in the page itself.
    assert page.locator("script:not([src])").count() == 0
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page.content())
