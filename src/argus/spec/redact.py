"""Environment values kept out of what others, or later readers, can see (pure).

A TaskSpec's `env_vars` may carry secrets (an API key). The TaskSpec is stored verbatim in the
server's database; every copy made elsewhere (the job's `config/jobspec.yaml` and
`config/submit_payload.json`, its debug files, the API's `jobspec_yaml`) shows the variables'
names with each value replaced by `REDACTED`.

Invariant: a text without env_vars values comes back unchanged, byte for byte; a text with
them keeps its comments and layout, only the values replaced, or (when its YAML is too unusual
to edit in place: anchors, merges, tags) is written out again, still without any value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

REDACTED = "<redacted>"
ENV_KEY = "env_vars"


def redact_env(env: Mapping[str, Any] | None) -> dict[str, str]:
    """`env` with every value replaced by REDACTED (the names kept, in order).

    Args:
        env: variable name -> value, or None.
    Returns:
        A new dict (empty for None).
    """
    return {str(k): REDACTED for k in (env or {})}


def redact_runtime_env(runtime_env: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of a Ray runtime_env with its `env_vars` values redacted (None stays None)."""
    if runtime_env is None:
        return None
    out = dict(runtime_env)
    if isinstance(out.get(ENV_KEY), Mapping):
        out[ENV_KEY] = redact_env(out[ENV_KEY])
    return out


# libyaml when present (about 20 times faster: the task detail route redacts on every read).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _env_node(text: str) -> yaml.MappingNode | None:
    root = yaml.compose(text, Loader=_LOADER)
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == ENV_KEY and isinstance(value, yaml.MappingNode):
            return value
    return None


def _in_place(text: str, env: yaml.MappingNode) -> str | None:
    """The values of `env` replaced in `text` itself; None when they cannot be edited so."""
    spans = []
    for _, value in env.value:
        if not isinstance(value, yaml.ScalarNode):
            return None
        start, end = value.start_mark.index, value.end_mark.index
        if not env.start_mark.index <= start <= end <= env.end_mark.index:
            return None  # an alias of an anchor elsewhere
        if value.style in ("|", ">"):
            end = text.rfind("\n", start, end) if text[start:end].endswith("\n") else end
        spans.append((start, end))
    out = text
    for start, end in sorted(spans, reverse=True):
        out = out[:start] + f'"{REDACTED}"' + out[end:]
    return out


def redact_spec_text(text: str) -> str:
    """TaskSpec YAML with each `env_vars` value replaced by REDACTED (names kept).

    Args:
        text: the TaskSpec as the user wrote it.
    Returns:
        `text` itself when it has no env_vars values (or is not YAML this can read); else the
        redacted text, checked to load to the same TaskSpec but for those values.
    """
    if ENV_KEY not in text:
        return text
    try:
        original = yaml.load(text, Loader=_LOADER)
        env = _env_node(text)
    except yaml.YAMLError:
        return text
    if not isinstance(original, dict) or not isinstance(original.get(ENV_KEY), dict) or env is None:
        return text
    if not original[ENV_KEY]:
        return text
    expected = {**original, ENV_KEY: redact_env(original[ENV_KEY])}
    edited = _in_place(text, env)
    if edited is not None:
        try:
            if yaml.load(edited, Loader=_LOADER) == expected:
                return edited
        except yaml.YAMLError:
            pass
    return yaml.safe_dump(expected, sort_keys=False, allow_unicode=True)
