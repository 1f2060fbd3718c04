"""Code snapshots (issue 12): the record the store hands out and the rules for names and refs.

A snapshot is one user's immutable tree, identified by its manifest hash
(`argus.domain.code_manifest.manifest_sha256`) and named by its last push; a name means the
newest snapshot pushed under it. A ref is what a user types to pick one: a name, or at least
`MIN_PREFIX` hex characters of the hash. So that a ref never reads both ways, a name is never
`MIN_PREFIX` or more hex characters alone. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_PREFIX = 8
NAME_MAX = 128
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class CodeSnapshot:
    """One row of `code_snapshots`: `size_bytes` is the files' total, `files` how many entries
    (files and symlinks); times are epoch seconds (`updated_at`: the last push of this content)."""

    user_id: str
    sha256: str
    name: str
    size_bytes: int
    files: int
    created_at: float
    updated_at: float


def code_name_problem(name: object) -> str | None:
    """Why `name` cannot name a snapshot, else None."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > NAME_MAX:
        return f"must be at most {NAME_MAX} characters"
    if not _NAME_RE.fullmatch(name):
        return "must be letters, digits, '.', '_' and '-', starting with a letter or a digit"
    if looks_like_prefix(name):
        return f"must not be {MIN_PREFIX} or more hex characters alone (it would read as a snapshot hash)"
    return None


def looks_like_prefix(ref: str) -> bool:
    """Whether `ref` is a hash prefix (`MIN_PREFIX` to 64 lower-case hex characters)."""
    return MIN_PREFIX <= len(ref) <= 64 and bool(_HEX_RE.fullmatch(ref))


def default_name(directory: str) -> str:
    """The name a push takes by default: the directory's own name, with other characters as '-'."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", directory.rstrip("/").rsplit("/", 1)[-1]).lstrip("._-")[:NAME_MAX]
    if not base or looks_like_prefix(base):
        return "code" if not base else f"code-{base}"[:NAME_MAX]
    return base


def human_size(n: int) -> str:
    """`n` bytes as `12.3 MiB` (below 1 KiB as `512 B`)."""
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{n} B" if n < 1024 else f"{size:.1f} {unit}"
    return f"{n} B"
