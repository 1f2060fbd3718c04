"""Which Hydra overrides a user may hand in: none of them can escape the user's own run.

Owns the rules on a TaskSpec's `overrides`, checked with Hydra's own override grammar so
that quoted values, lists and dicts are walked element by element:

- no interpolation: no `$` anywhere (`${oc.env:...}`, `${oc.decode:...}` and every other
  resolver, and the escapes that produce them), so no value can read the job's environment;
- no key that Argus sets (`MANAGED_KEYS`), nor a parent that would replace one;
- no key that writes outputs or changes the runtime: `hydra.*`, any `*_dir` or `*save_path`,
  `record_file`, `timeline_json_file`, Ray's `runtime_env` / `py_executable` and the rest of
  `ray_kwargs.ray_init` but `num_cpus`, Hydra's instantiation keys (`_target_`, ...) and
  shell commands (`*_cmd`);
- no path relative to the home (`~`) or to the working directory (`./x`, `a/../b`); absolute
  paths (and `file://` URIs) are returned by `override_paths` for the check against the roots
  the user may read (`argus.spec.inputs`), which needs the filesystem. Everything else is pure.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

# Hydra keys that Argus derives from the TaskSpec and the job root; overriding them would
# break isolation (outputs) or the gang the scheduler admitted.
MANAGED_KEYS = (
    "trainer.default_local_dir",
    "trainer.nnodes",
    "trainer.n_gpus_per_node",
    "trainer.device",
    "trainer.logger",
)
# The one key under ray_kwargs.ray_init that only sizes ray.init (verl 0.9.1's default config).
RAY_INIT_ALLOWED = frozenset({"num_cpus"})
_OUTPUT_SEGMENT = re.compile(r"^(?:.*_)?(?:dir|save_path)$|^(?:logdir|outdir|record_file|timeline_json_file)$")
_HYDRA_SPECIAL = re.compile(r"^_[a-z]+_$")
_RUNTIME_SEGMENTS = frozenset({"runtime_env", "env_vars", "py_executable"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class CheckedOverride:
    """One override that passed the rules: its dotted key and the absolute paths it names."""

    key: str
    paths: tuple[str, ...]


def key_problem(key: str) -> str | None:
    """Why `key` (dotted; `/` of a config group counts as `.`) may not be overridden, or None."""
    segments = [s.lower() for s in key.replace("/", ".").split(".")]
    dotted = ".".join(segments)
    if segments[0] == "hydra":
        return (
            f"'{key}' is Hydra's own configuration (where it writes its outputs and logs, "
            f"its launcher and callbacks) and cannot be overridden"
        )
    for managed in MANAGED_KEYS:
        if dotted == managed:
            return f"'{key}' is set by Argus and cannot be overridden"
        if managed.startswith(dotted + "."):
            return f"'{key}' would change '{managed}', which is set by Argus"
    if any(_HYDRA_SPECIAL.match(s) for s in segments):
        return f"'{key}' chooses which Python object is instantiated and cannot be overridden"
    if any(s in _RUNTIME_SEGMENTS for s in segments):
        return (
            f"'{key}' would change the environment or the interpreter of the job's "
            f"processes, which Argus sets (use env_vars for environment variables)"
        )
    if segments[:2] == ["ray_kwargs", "ray_init"] and len(segments) > 2 and segments[2] not in RAY_INIT_ALLOWED:
        return (
            f"'{key}' is passed to ray.init and could attach the job elsewhere in the cluster; "
            f"only ray_kwargs.ray_init.num_cpus may be set"
        )
    last = segments[-1]
    if _OUTPUT_SEGMENT.match(last) or segments[-2:] == ["prometheus", "file"]:
        return f"'{key}' names a place the job writes to; a job writes only inside its own directory, which Argus sets"
    if last.endswith("_cmd") or last in ("cmd", "command"):
        return f"'{key}' runs a shell command and cannot be overridden"
    return None


# URI schemes that name remote storage (read by verl through fsspec or the hub): allowed as
# they are. `file` and `local` name this machine's files and are checked like paths; every
# other scheme (fsspec's caching, archive and chaining ones read local files too) is refused.
REMOTE_SCHEMES = frozenset({"hdfs", "s3", "s3a", "gs", "gcs", "abfs", "az", "http", "https", "hf"})
_LOCAL_SCHEMES = frozenset({"file", "local"})
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)
MAX_OVERRIDE_CHARS = 2048  # Hydra parses a list in time quadratic in its length: 0.2 s here


def value_path(value: str) -> tuple[str | None, str | None]:
    """(absolute path named by `value`, None) or (None, why it is refused); (None, None): not a path.

    A path is a string that starts with `/`, `~`, `.`, or a local URI (`file:`, `local:`), or
    has a `..` component; a remote URI (`REMOTE_SCHEMES`), a hub id (`org/name`), a plain word
    or a `name:value` without a slash (`cuda:0`) is not one. URIs of any other scheme, and
    chained ones (`a::b`), are refused.
    """
    text = value.strip()
    if "::" in text:
        return None, f"'{value}' chains URLs ('::'); give one absolute path or remote URI"
    uri = SCHEME.match(text)
    if uri:
        scheme, rest = uri.group(1).lower(), uri.group(2)
        if scheme in _LOCAL_SCHEMES:
            if "%" in rest:  # some readers decode %2F into '/': no escapes in a local URI
                return None, f"'{value}' has a '%' escape; give the path as it is"
            text = rest[2:] if rest.startswith("//") else rest  # file:///p and file:/p, no host
            if not text.startswith("/"):
                return None, f"'{value}' is not a {scheme}: URI of an absolute path"
        elif scheme in REMOTE_SCHEMES and rest.startswith("//"):
            return None, None
        elif "/" in rest:
            return None, (
                f"'{value}' is a URI of scheme '{scheme}'; only paths, file:// and "
                f"{', '.join(sorted(REMOTE_SCHEMES))} URIs are allowed"
            )
        else:
            return None, None  # `name:value` such as cuda:0
    if text.startswith("~"):
        return None, f"'{value}' is relative to a home directory; give an absolute path"
    if text.startswith("/"):
        return text, None
    if text.startswith(".") or ".." in text.split("/"):
        return None, f"'{value}' is a relative path; give an absolute path"
    return None, None


def check_model_id(value: str) -> str:
    """A model id is a hub id (`org/name`) or an absolute path (checked against the roots later).

    Raises:
        ValueError: anything else (`~/...`, `./m`, `a/../b`, ...).
    """
    if value.startswith("/"):
        return value
    if _HUB_ID.fullmatch(value) and ".." not in value:
        return value
    raise ValueError(
        "must be a model hub id such as 'Qwen/Qwen2.5-0.5B' (letters, digits, '.', "
        "'_', '-' around one '/', no '..') or an absolute path"
    )


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser  # ~0.3 s: on first use

    return OverridesParser.create()


def _plain(value: Any) -> Any:
    from hydra.core.override_parser.types import QuotedString

    return value.text if isinstance(value, QuotedString) else value


def _walk(key: str, value: Any, paths: list[str]) -> None:
    """Apply the key rules to every key of a dict value and the path rules to every string."""
    value = _plain(value)
    if isinstance(value, dict):
        for sub, item in value.items():
            full = f"{key}.{_plain(sub)}"
            why = key_problem(full)
            if why:
                raise ValueError(why)
            _walk(full, item, paths)
    elif isinstance(value, list):
        for item in value:
            _walk(key, item, paths)
    elif isinstance(value, str):
        path, why = value_path(value)
        if why:
            raise ValueError(f"{key}: {why}")
        if path:
            paths.append(path)


@functools.lru_cache(maxsize=4096)
def _check(text: str) -> CheckedOverride | str:
    # Hydra's parser takes time worse than linear in the length of a list: bound it first
    # (the cache then holds at most 4096 x MAX_OVERRIDE_CHARS characters).
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "contains control characters"
    if "=" not in text:
        return f"'{text}' is not a Hydra override of the form key=value"
    if "$" in text:
        return "must not contain '$': interpolation (${...}) and resolvers such as oc.env are refused in overrides"
    try:
        parsed = _parser().parse_override(text)
    except Exception as exc:  # Hydra raises several types; all mean "not an override"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"'{text}' cannot be parsed as a Hydra override: {first}"
    key = parsed.key_or_group
    if parsed.package is not None:
        return f"'{text}' moves a config group with '@'; such overrides are not supported"
    if parsed.is_sweep_override():
        return f"'{text}' is a sweep (several values); a task is one run"
    why = key_problem(key)
    if why:
        return why
    paths: list[str] = []
    try:
        _walk(key.replace("/", "."), parsed.value(), paths)
    except ValueError as exc:
        return str(exc)
    return CheckedOverride(key.replace("/", "."), tuple(paths))


def check_override(text: str) -> CheckedOverride:
    """Check one override against the rules above.

    Args:
        text: one item of a TaskSpec's `overrides`, as written.
    Returns:
        Its key and the absolute paths it names.
    Raises:
        ValueError: the reason it is refused.
    """
    if not isinstance(text, str):
        raise ValueError("must be a string")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise ValueError(
            f"is {len(text)} characters long; an override may have at most "
            f"{MAX_OVERRIDE_CHARS} (put long lists in a file under your data)"
        )
    result = _check(text)
    if isinstance(result, str):
        raise ValueError(result)
    return result


def override_paths(text: str) -> tuple[str, ...]:
    """The absolute paths an already valid override names (its values, walked)."""
    return check_override(text).paths
