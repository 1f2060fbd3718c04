"""Node registration (seed v2.1 §4.1): what an admin registers, checked field by field (pure).

Owns `NodeRegistration` (host, port, user, a key *reference*: a file name in the server's key
directory, labels, GPUs, CPUs), `parse_registration`, which reports every problem of a body at
once, each naming its field (`RegistrationError`), the syntax of node names and of node labels
(Ray's), the labels Argus reserves (`ray.io/…`, `argus.io/node`: the label the agent joins Ray
with, set to the node's name), and the CLI's `k=v,…` form of labels. `argus.domain.nodes`
re-exports all of it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NODE_LABEL = "argus.io/node"
POOL_LABEL = "pool"
RAY_RESERVED_PREFIX = "ray.io/"
DEFAULT_SSH_PORT = 22
MAX_LABELS = 64
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_KEY_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
# Ray's label syntax (ray._private.label_utils, Kubernetes' rules); tests keep the two in step.
_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?"
_LABEL_NAME = re.compile(rf"^{_LABEL}$")
_LABEL_PREFIX = re.compile(rf"^({_LABEL})?(\.({_LABEL})?)*$")
FIELDS = ("name", "host", "port", "user", "key", "labels", "gpus", "cpus")


@dataclass(frozen=True)
class NodeRegistration:
    """A valid registration."""

    name: str
    host: str
    user: str
    key: str
    port: int = DEFAULT_SSH_PORT
    labels: dict[str, str] = field(default_factory=dict)
    gpus: int | None = None
    cpus: int | None = None

    @property
    def pool(self) -> str | None:
        return self.labels.get(POOL_LABEL)


class RegistrationError(ValueError):
    """A registration is invalid; `problems` is every `(field, message)` found."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


def check_name(name: Any) -> str | None:
    """Why `name` is not a valid node name, else None."""
    if not isinstance(name, str):
        return "must be a string"
    if not _NAME.fullmatch(name):
        return (
            "must be 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit (a DNS label)"
        )
    return None


def label_key_problem(key: Any) -> str | None:
    """Why `key` may not be a node label key (Ray's syntax; `ray.io/` and `argus.io/node` are
    reserved), else None."""
    if not isinstance(key, str) or not key:
        return "a label key must be a non-empty string"
    if key.startswith(RAY_RESERVED_PREFIX):
        return f"label key '{key}' is reserved: keys starting with '{RAY_RESERVED_PREFIX}' are Ray's"
    if key == NODE_LABEL:
        return f"label key '{NODE_LABEL}' is reserved: Argus sets it to the node's name"
    prefix, _, name = key.rpartition("/")
    if "/" in key and (len(prefix) > 253 or not _LABEL_PREFIX.fullmatch(prefix)):
        return f"label key prefix '{prefix}' must be DNS labels separated by dots, at most 253 characters"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (
            f"label key name '{name}' must be at most 63 characters: letters, digits, '-', "
            "'_' and '.', starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: Any) -> str | None:
    """Why `value` may not be a node label value, else None (the empty value is Ray's too)."""
    if not isinstance(value, str):
        return "a label value must be a string"
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        return (
            f"label value '{value}' must be at most 63 characters: letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit"
        )
    return None


def _int(value: Any, lo: int, hi: int | None = None) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be an integer"
    if value < lo or (hi is not None and value > hi):
        return f"must be from {lo} to {hi}" if hi is not None else f"must be at least {lo}"
    return None


def _host_problem(host: Any) -> str | None:
    if not isinstance(host, str) or not host:
        return "must be a host name or an IP address"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(host):
        return "must be a host name (letters, digits, '-' and '.') or an IP address"
    return None


def parse_registration(body: Any) -> NodeRegistration:
    """Validate a registration body (a JSON object).

    Args:
        body: `{"name", "host", "user", "key", "port"?, "labels"?, "gpus"?, "cpus"?}`.
            `key` is a key *reference*: a file name inside the server's key directory.
            `gpus`/`cpus` left out let Ray detect them on the node.

    Returns:
        The registration.

    Raises:
        RegistrationError: with every problem, each naming its field.
    """
    if not isinstance(body, Mapping):
        raise RegistrationError([("<body>", "must be a JSON object")])
    problems = [
        *_field_problems(body),
        *_identity_problems(body),
        *_number_problems(body),
        *_labels_problems(body.get("labels")),
    ]
    if problems:
        raise RegistrationError(problems)
    labels = body.get("labels")
    # Each was checked above to be a string of its own syntax.
    return NodeRegistration(
        name=str(body.get("name")),
        host=str(body.get("host")),
        user=str(body.get("user")),
        key=str(body.get("key")),
        port=body.get("port", DEFAULT_SSH_PORT),
        labels=dict(labels) if labels is not None else {},
        gpus=body.get("gpus"),
        cpus=body.get("cpus"),
    )


def _field_problems(body: Mapping[Any, Any]) -> list[tuple[str, str]]:
    """The unknown fields, then the required ones left out."""
    problems: list[tuple[str, str]] = []
    for key in body:
        if key not in FIELDS:
            problems.append((str(key), f"unknown field; expected one of {', '.join(FIELDS)}"))
    for required in ("name", "host", "user", "key"):
        if body.get(required) is None:
            problems.append((required, "is required"))
    return problems


def _identity_problems(body: Mapping[Any, Any]) -> list[tuple[str, str]]:
    """The problems of `name`, `host`, `user` and `key` (those given), in that order."""
    problems: list[tuple[str, str]] = []
    name, host, user, key = (body.get(k) for k in ("name", "host", "user", "key"))
    if name is not None and (why := check_name(name)):
        problems.append(("name", why))
    if host is not None and (why := _host_problem(host)):
        problems.append(("host", why))
    if user is not None and (not isinstance(user, str) or not _USER.fullmatch(user)):
        problems.append(
            (
                "user",
                "must be a user name: lower-case letters, digits, '_' and '-', "
                "starting with a letter or '_', at most 32 characters",
            )
        )
    if key is not None and (not isinstance(key, str) or not _KEY_REF.fullmatch(key)):
        problems.append(
            (
                "key",
                "must be the name of a key file in the server's key directory "
                "(letters, digits, '.', '_' and '-'; no '/' and no '..')",
            )
        )
    return problems


def _number_problems(body: Mapping[Any, Any]) -> list[tuple[str, str]]:
    """The problems of `port`, `gpus` and `cpus`."""
    problems: list[tuple[str, str]] = []
    if why := _int(body.get("port", DEFAULT_SSH_PORT), 1, 65535):
        problems.append(("port", why))
    # The same bounds as `argus node-agent --gpus/--cpus`, so a node is never refused there.
    for name_, lo, hi in (("gpus", 0, 1024), ("cpus", 1, 4096)):
        if body.get(name_) is not None and (why := _int(body[name_], lo, hi)):
            problems.append((name_, why))
    return problems


def _labels_problems(labels: Any) -> list[tuple[str, str]]:
    """The problems of `labels` (None: no labels): its shape, its size, then each label."""
    problems: list[tuple[str, str]] = []
    if labels is None:
        labels = {}
    if not isinstance(labels, Mapping):
        problems.append(("labels", "must be an object of label key -> value"))
        labels = {}
    elif len(labels) > MAX_LABELS:
        problems.append(("labels", f"at most {MAX_LABELS} labels"))
    for k, v in labels.items():
        if (why := label_key_problem(k)) or (why := label_value_problem(v)):
            problems.append((f"labels.{k}", why))
    return problems


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (the CLI's `--labels`) as a mapping; checked later by `parse_registration`.

    Raises:
        ValueError: an item is not `key=value`, or a key repeats.
    """
    out: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"'{item}' is not key=value")
        if key.strip() in out:
            raise ValueError(f"label '{key.strip()}' is given twice")
        out[key.strip()] = value.strip()
    return out


def format_labels(labels: Mapping[str, str]) -> str:
    """The inverse of `parse_labels`: `k=v,…`, keys sorted."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))
