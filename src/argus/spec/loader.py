"""Reading YAML inputs into models, with `${shared_root}` expansion.

Owns YAML parsing (syntax errors, and values not of their tag's type such as `2024-02-30`,
become a `Problem` with the line; a plain document of mappings, lists and scalars is built
straight from libyaml's nodes, anything else by PyYAML's safe constructor, with the same
result), the expansion of
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
MAX_DEPTH = 32
MAX_SCALAR_CHARS = 4300  # a typed scalar (int, float, ...): PyYAML's base-60 ints take quadratic time
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_STR, _SEQ, _MAP = (f"tag:yaml.org,2002:{t}" for t in ("str", "seq", "map"))
_SCALAR_TAGS = [f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "timestamp", "binary")]


def _checked(construct: Any) -> Any:
    """A scalar constructor whose refusal is a YAML error at the value: PyYAML's own raise
    ValueError, KeyError, IndexError... (`2024-02-30`, `!!bool maybe`, `!!int ''`)."""

    def build(loader: Any, node: yaml.ScalarNode) -> Any:
        kind = node.tag.rsplit(":", 1)[-1]
        if len(node.value) > MAX_SCALAR_CHARS:
            why = f"{kind} value of more than {MAX_SCALAR_CHARS} characters"
            raise yaml.constructor.ConstructorError(None, None, why, node.start_mark)
        try:
            return construct(loader, node)
        except yaml.YAMLError:
            raise
        except Exception:
            shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown!r} is not a valid {kind}", node.start_mark
            ) from None

    return build


def loader_class(base: type) -> type:
    """`base` (a safe loader) whose typed scalars are checked (`_checked`)."""
    checked = type(f"Checked{base.__name__}", (base,), {})
    for tag in _SCALAR_TAGS:
        checked.add_constructor(tag, _checked(base.yaml_constructors[tag]))  # type: ignore[attr-defined]
    return checked


# libyaml's safe loader when PyYAML was built with it: ten times faster than the pure one.
_LOADER = loader_class(getattr(yaml, "CSafeLoader", yaml.SafeLoader))
# The constructors of the plain scalars other than str (none of them recurses).
_SCALARS = {tag: _LOADER.yaml_constructors[tag] for tag in _SCALAR_TAGS}  # type: ignore[attr-defined]


class _Unusual(Exception):
    """A document the plain path leaves to PyYAML and `tree_problem`: an alias of a mapping or
    list, a merge key, a tag other than the plain ones, a key that is not a scalar, nesting past
    MAX_DEPTH, or text with an unpaired surrogate."""


def _build(node: yaml.Node, loader: Any, depth: int, seen: set[int]) -> Any:
    """What PyYAML's safe constructor makes of `node`, for a plain document that `tree_problem`
    would pass (else `_Unusual`)."""
    tag = node.tag
    if isinstance(node, yaml.ScalarNode):
        if tag == _STR:
            if _SURROGATE.search(node.value) is not None:
                raise _Unusual
            return node.value
        scalar = _SCALARS.get(tag)
        if scalar is None:
            raise _Unusual
        try:
            return scalar(loader, node)
        except Exception:  # PyYAML reports it, or an earlier problem, in its own order
            raise _Unusual from None
    if depth >= MAX_DEPTH or id(node) in seen:
        raise _Unusual
    seen.add(id(node))
    if tag == _SEQ and isinstance(node, yaml.SequenceNode):
        return [_build(item, loader, depth + 1, seen) for item in node.value]
    if tag != _MAP or not isinstance(node, yaml.MappingNode):
        raise _Unusual
    out = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise _Unusual
        out[_build(key, loader, depth + 1, seen)] = _build(value, loader, depth + 1, seen)
    return out


def _load(text: str) -> tuple[Any, bool]:
    """`yaml.load(text, Loader=_LOADER)`, and whether `tree_problem` must still look at it: a
    plain document is built without PyYAML's generic constructor (a third of the parse's time)
    and needs no second look. Raises what `yaml.load` raises."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, False
        try:
            return _build(node, loader, 0, set()), False
        except _Unusual:
            return loader.construct_document(node), True
    finally:
        loader.dispose()


def load_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    """Parse `text` as a YAML mapping.

    Raises:
        SpecError: the text is not YAML, a scalar is not of its type (`2024-02-30`,
            `!!bool maybe`) or too long, or the top level is not a mapping.
    """
    try:
        data, unusual = _load(text)
    except RecursionError:
        raise SpecError(source, [Problem("<yaml>", f"nested deeper than {MAX_DEPTH} levels")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [Problem("<yaml>", f"{where}{problem}")]) from None
    if data is None:
        data = {}
    problem = tree_problem(data) if unusual else None
    if problem:
        raise SpecError(source, [Problem("<yaml>", problem)])
    if not isinstance(data, dict):
        raise SpecError(source, [Problem("<root>", f"must be a mapping, got {type(data).__name__}")])
    return data


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
