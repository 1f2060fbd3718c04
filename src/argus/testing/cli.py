"""Running the `argus` command in-process for tests: stdout and stderr apart, colours stripped.

Owns `invoke` and its `CliResult`: the runner's `Result` with `out_text` and `err_text` (the two
streams without ANSI escapes) and `json()` (stdout parsed); every other attribute is the
`Result`'s own (`exit_code`, `stdout`, `stderr`, `output`, `exception`, ...).
"""

from __future__ import annotations

import json
import re
from typing import Any

from typer.testing import CliRunner, Result

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CliResult:
    """One run of the command: the runner's `Result` plus the streams without colours."""

    def __init__(self, result: Result):
        self.result = result
        self.out_text = ANSI.sub("", result.stdout)
        self.err_text = ANSI.sub("", result.stderr)

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.result.stdout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)


def _runner() -> CliRunner:
    try:
        # Click < 8.2 mixes stderr into stdout unless told not to; 8.2 dropped the argument
        # (the two are always apart), so the installed Click's typing may not know it.
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def invoke(app: Any, *args: Any) -> CliResult:
    """Run `app` with `args` (each turned into a string); exceptions are not caught."""
    return CliResult(_runner().invoke(app, [str(a) for a in args], catch_exceptions=False))
