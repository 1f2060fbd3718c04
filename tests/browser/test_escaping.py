"""What users write is shown as text in the console, never run: a task whose experiment name
holds `<script>` and `<img onerror>` shows both as visible text on /ui/tasks and on its own page,
no script of theirs runs, and every /ui page carries a Content-Security-Policy allowing only the
console's own scripts. Run under the shared lock: `flock /tmp/argus-ray-tests.lock
.venv/bin/python -m pytest -q tests/browser`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from argus.testing.sandbox import Sandbox, task_yaml

from .support import Console, ConsoleUser, login

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'


def csp_allows_only_own_scripts(policy: str | None) -> bool:
    directives = {d.split()[0]: d.split()[1:] for d in (policy or "").split(";") if d.strip()}
    scripts = directives.get("script-src", directives.get("default-src", []))
    return "'self'" in scripts and "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts


@pytest.fixture(scope="module")
def marked(console: Console, sandbox: Sandbox) -> Iterator[tuple[ConsoleUser, str]]:
    """A user and their task whose experiment name holds both payloads. It asks for 8 GPUs on
    one node, which no node has: it waits, with a pending reason, and never starts."""
    mallory = console.user("mallory")
    spec = task_yaml(sandbox, "ppo", n_gpus_per_node=8, experiment_name=f"x {SCRIPT} {IMG}")
    tid = mallory.api.submit(spec)["task_id"]
    yield mallory, tid
    mallory.api.cancel(tid)


def open_watched(page: Page, path: str) -> list[str]:
    """Open `path`; returns the list that collects script errors and dialogs from then on."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog {dialog.message}"))
    answer = page.goto(path)
    assert answer is not None and answer.status == 200, answer and answer.status
    assert csp_allows_only_own_scripts(answer.headers.get("content-security-policy")), answer.headers
    return errors


def assert_nothing_ran(page: Page, errors: list[str]) -> None:
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert errors == []


def test_markup_in_an_experiment_name_is_text_in_the_task_list(marked, page: Page):
    mallory, tid = marked
    login(page, mallory.token)
    errors = open_watched(page, "/ui/tasks")
    row = page.locator(f'tr[data-task-id="{tid}"]')
    expect(row).to_have_count(1)
    expect(row).to_contain_text(SCRIPT)
    expect(row).to_contain_text(IMG)
    assert_nothing_ran(page, errors)


def test_markup_in_an_experiment_name_is_text_on_the_task_page(marked, page: Page):
    mallory, tid = marked
    login(page, mallory.token)
    errors = open_watched(page, f"/ui/tasks/{tid}")
    expect(page.locator("#task-spec")).to_contain_text(SCRIPT)
    expect(page.locator("#task-spec")).to_contain_text(IMG)
    assert_nothing_ran(page, errors)


def test_every_console_page_carries_the_csp(console: Console, page: Page):
    answer = page.goto("/ui/login")
    assert answer is not None and answer.status == 200
    assert csp_allows_only_own_scripts(answer.headers.get("content-security-policy")), answer.headers
    # No inline script or inline handler in the page itself.
    assert page.locator("script:not([src])").count() == 0
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page.content())
