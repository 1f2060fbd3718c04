"""Users' secrets (issue 12): the record the store hands out, and the rules for a name and a value.

A user keeps named secrets (`WANDB_API_KEY`, `HF_TOKEN`); a task names the ones it needs, and each
becomes an environment variable of its job. So a name is an environment variable name
(`[A-Za-z_][A-Za-z0-9_]{0,127}`); which names a job may never be given (`LD_PRELOAD`, `RAY_*`,
`PYTHONPATH`, `ARGUS_*`, ...) is the TaskSpec's rule, applied by the service on top of this one. A
value is non-empty UTF-8 text of at most MAX_VALUE_BYTES with no NUL (an environment variable
cannot hold one).

Invariants: a record carries a name and times, never a value; no message here ever quotes a
value. Pure: the caller passes the times in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
NAME_RULE = "letters, digits and _, not starting with a digit, at most 128"
MAX_VALUE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """One stored secret, without its value: `created_at` and `updated_at` are epoch seconds."""

    name: str
    created_at: float
    updated_at: float


def secret_name_problem(name: object) -> str | None:
    """Why `name` cannot name a secret by the name rule alone, else None."""
    if not isinstance(name, str) or not name:
        return "is required"
    if not NAME_RE.fullmatch(name):
        return f"must be an environment variable name: {NAME_RULE}"
    return None


def secret_value_problem(value: object) -> str | None:
    """Why `value` cannot be a secret's value, else None; the reason never quotes the value."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid UTF-8 text"
    if size > MAX_VALUE_BYTES:
        return f"must be at most {MAX_VALUE_BYTES} bytes (UTF-8), got {size}"
    if "\x00" in value:
        return "must not contain a NUL character (an environment variable cannot hold one)"
    return None
