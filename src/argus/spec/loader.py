"""Reading YAML inputs into models, with `${shared_root}` expansion.

Owns YAML parsing (syntax errors become a `Problem` with the line), the expansion of
`${shared_root}` inside string values (seed 000 §3), and `parse_model`, the one way a YAML
mapping becomes a validated model. Only names in the given mapping are expanded; anything else
(`${PYTHONPATH}`, Hydra interpolations) is left as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from argus.spec.errors import Problem, SpecError, problems_from_validation

M = TypeVar("M", bound=BaseModel)
# libyaml's safe loader when PyYAML was built with it: ten times faster than the pure one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 32
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse `text` as a YAML mapping.

    Raises:
        SpecError: the text is not YAML, or its top level is not a mapping.
    """
    try:
        data = yaml.load(text, Loader=_LOADER)
    except RecursionError:
        raise SpecError(source, [Problem("<yaml>", f"nested deeper than {MAX_DEPTH} levels")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [Problem("<yaml>", f"{where}{problem}")]) from None
    if data is None:
        data = {}
    problem = tree_problem(data)
    if problem:
        raise SpecError(source, [Problem("<yaml>", problem)])
    if not isinstance(data, dict):
        raise SpecError(source, [Problem("<root>", f"must be a mapping, got {type(data).__name__}")])
    return data


_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad_text(value: str) -> bool:
    return _SURROGATE.search(value) is not None


def tree_problem(data: Any) -> str | None:
    """Why a loaded YAML document is refused, or None.

    Aliases (`&a` / `*a`, and `<<` merges) are refused: a self-referring alias would loop for
    ever and nested ones grow exponentially when expanded, and a TaskSpec never needs them.
    So are documents nested deeper than MAX_DEPTH and text with unpaired surrogates (a YAML
    `\\ud800` escape), which cannot be written out as UTF-8.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _bad_text(value):
                return "text must not contain unpaired surrogates"
            continue
        if not isinstance(value, (dict, list)):
            continue
        if id(value) in seen:
            return "YAML aliases and merge keys (&name, *name, <<) are not supported"
        seen.add(id(value))
        if depth >= MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in items)
    return None


def read_text(path: str | Path) -> str:
    """Read a YAML file; a missing or unreadable file is a `SpecError` naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [Problem("<file>", exc.strerror or str(exc))]) from None


def expand_vars(value: Any, variables: Mapping[str, str]) -> Any:
    """Replace `${name}` for the names in `variables` inside every string of `value`."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        return _VAR.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [expand_vars(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: expand_vars(v, variables) for k, v in value.items()}
    return value


def parse_model(model: type[M], data: Mapping[str, Any], source: str) -> M:
    """Validate `data` as `model`; every problem is reported at once.

    Raises:
        SpecError: with one `Problem` per invalid or unknown field.
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(source, problems_from_validation(exc, model)) from None
