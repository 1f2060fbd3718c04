"""Field-level errors for the YAML inputs.

Owns `Problem` (one field, one reason) and `SpecError` (all problems of one input), and the
translation of pydantic's `ValidationError` into them, including the "did you mean" hint for
unknown keys. Every user-facing validation error in Argus goes through here, so the CLI can
exit 2 and the API can answer 400 with the same field names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: the dotted field path and the reason."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class SpecError(ValueError):
    """An input (a YAML file or text) is invalid; `problems` lists every reason found."""

    def __init__(self, source: str, problems: Iterable[Problem]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} is invalid:\n{lines}")


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """Walk `loc` through nested pydantic models; None when it leaves models."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None or not isinstance(part, str):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current


def field_name(loc: tuple) -> str:
    """`("overrides", 2)` -> `overrides[2]`, `("env_vars", "LD_PRELOAD", "[key]")` -> `env_vars.LD_PRELOAD`."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems_from_validation(exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    """Translate a pydantic `ValidationError` of `model` into `Problem`s.

    Unknown keys get the nearest valid field name suggested; other messages are pydantic's,
    without its boilerplate prefix ("Value error, ").
    """
    problems: list[Problem] = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        field = field_name(loc) or "<root>"
        if err.get("type") == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            names = sorted(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            allowed = f" (valid keys: {', '.join(names)})" if names and not close else ""
            problems.append(Problem(field, f"unknown key{hint}{allowed}"))
            continue
        msg = str(err.get("msg", "invalid value"))
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
        if err.get("type") == "missing":
            msg = "is required"
        if not loc:
            # Cross-field rules raise "field: reason" from a model validator.
            head, sep, rest = msg.partition(": ")
            if sep and head.isidentifier():
                field, msg = head, rest
        problems.append(Problem(field, msg))
    return problems
