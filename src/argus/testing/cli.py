"""Running the `argus` command in-process for tests: stdout and stderr apart, colours stripped."""

from __future__ import annotations

import json
import re
from typing import Any

from typer.testing import CliRunner

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def invoke(app: Any, *args: Any) -> Any:
    """Run `app` with `args`; the result also has `out_text`, `err_text` (no ANSI) and `json()`."""
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:  # Click 8.2 keeps the two apart by itself
        runner = CliRunner()
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    result.out_text = ANSI.sub("", result.stdout)
    result.err_text = ANSI.sub("", result.stderr)
    result.json = lambda: json.loads(result.stdout)
    return result
