"""What a code snapshot holds, and its content hash (issue 12): the ignore rules and the manifest.

Owns the one definition the client and the server share: which paths of a directory are kept
(`.git` and `__pycache__` never are, nor what the root's `.argusignore` names), the manifest of
what is kept (sorted relative POSIX paths, each a file or a symlink, with its executable bit
and the SHA-256 of its content or link target) and `manifest_sha256`, the snapshot's id.

Invariants: the hash depends only on the entries (paths, kinds, executable bits, content and
target hashes): not on their order, times, owners or other mode bits, so the same tree hashes the
same on any machine. Directories are not entries: an empty directory changes nothing. Hashing is
pure over the entries; `scan` is the one function here that reads a directory (it never follows
a symlink).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

ALWAYS_IGNORED = frozenset({".git", "__pycache__"})
IGNORE_FILE = ".argusignore"
MANIFEST_VERSION = b"argus-code-manifest-v1\n"
_CHUNK = 1024 * 1024

EntryKind = Literal["file", "symlink"]


class ManifestError(ValueError):
    """A directory cannot be snapshotted: `path` (relative) is what stops it."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ManifestEntry:
    """One kept path: `sha256` is of the file's bytes or of the link's target (as bytes);
    `size` is the file's length (a symlink's target length)."""

    path: str
    kind: EntryKind
    executable: bool
    sha256: str
    size: int


# -- ignore rules -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pattern:
    parts: tuple[str, ...]  # the pattern split at '/', for an anchored pattern
    anchored: bool  # has a '/' inside or at the start: matched from the root
    dir_only: bool  # ended with '/': matches directories only
    negate: bool  # started with '!': keeps what an earlier pattern left out


def _match_parts(pattern: Sequence[str], path: Sequence[str]) -> bool:
    """Segment-wise match: `*` and `?` stay within a segment, a `**` segment spans any number."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_parts(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatch.fnmatchcase(path[0], head) and _match_parts(rest, path[1:])


@dataclass(frozen=True)
class IgnoreRules:
    """`.argusignore` patterns, gitignore-like: blank lines and `#` comments are skipped; a
    pattern without '/' matches a name at any depth; one with a '/' (or a leading '/') matches
    the path from the root; a trailing '/' matches directories only; `!` keeps again what an
    earlier pattern left out (the last matching pattern wins). `.git` and `__pycache__` are
    always left out."""

    patterns: tuple[_Pattern, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        out: list[_Pattern] = []
        for raw in text.splitlines():
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate or line.startswith("\\"):  # `\#name` or `\!name`: a literal first character
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            line = line.lstrip("/")
            if not line:
                continue
            out.append(_Pattern(tuple(p for p in line.split("/") if p), anchored, dir_only, negate))
        return cls(tuple(out))

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether the relative POSIX `path` is left out (its parents already were kept)."""
        parts = path.split("/")
        if parts[-1] in ALWAYS_IGNORED:
            return True
        verdict = False
        for p in self.patterns:
            if p.dir_only and not is_dir:
                continue
            hit = _match_parts(p.parts, parts) if p.anchored else fnmatch.fnmatchcase(parts[-1], p.parts[0])
            if hit:
                verdict = not p.negate
        return verdict


# -- the manifest and its hash ------------------------------------------------------------------
def _path_bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def manifest_sha256(entries: Iterable[ManifestEntry]) -> str:
    """The snapshot id: SHA-256 over the entries in path order.

    Raises:
        ValueError: a path appears twice.
    """
    ordered = sorted(entries, key=lambda e: _path_bytes(e.path))
    h = hashlib.sha256(MANIFEST_VERSION)
    previous: str | None = None
    for e in ordered:
        if e.path == previous:
            raise ValueError(f"{e.path}: appears twice in the manifest")
        previous = e.path
        name = _path_bytes(e.path)
        h.update(f"{e.kind} {'x' if e.executable else '-'} {e.sha256} {len(name)}\n".encode("ascii"))
        h.update(name + b"\n")
    return h.hexdigest()


def file_sha256(path: str) -> tuple[str, int]:
    """The SHA-256 of a file's bytes and its length (the file is opened without following a link)."""
    h = hashlib.sha256()
    size = 0
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def link_entry(path: str, target: str) -> ManifestEntry:
    raw = os.fsencode(target)
    return ManifestEntry(path, "symlink", False, hashlib.sha256(raw).hexdigest(), len(raw))


@dataclass(frozen=True)
class Scan:
    """What `scan` found: the kept entries in path order, and the paths left out (a left-out
    directory is listed, not what is under it)."""

    entries: tuple[ManifestEntry, ...]
    ignored: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return manifest_sha256(self.entries)

    @property
    def size_bytes(self) -> int:
        return sum(e.size for e in self.entries)


def scan(root: str) -> Scan:
    """The manifest of the directory `root`, with its `.argusignore` (at the root) applied.

    Raises:
        ManifestError: a kept path is not a file, a directory or a symlink (a socket, a fifo, a
            device), or cannot be read.
        NotADirectoryError: `root` is not a directory.
    """
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} is not a directory")
    rules = IgnoreRules()
    ignore_file = os.path.join(root, IGNORE_FILE)
    if os.path.isfile(ignore_file) and not os.path.islink(ignore_file):
        with open(ignore_file, encoding="utf-8", errors="surrogateescape") as f:
            rules = IgnoreRules.parse(f.read())
    entries: list[ManifestEntry] = []
    ignored: list[str] = []

    def walk(rel: str) -> None:
        here = os.path.join(root, rel) if rel else root
        try:
            names = sorted(os.listdir(here))
        except OSError as exc:
            raise ManifestError(rel or ".", f"cannot be read ({exc.strerror})") from exc
        for name in names:
            path = f"{rel}/{name}" if rel else name
            full = os.path.join(here, name)
            try:
                st = os.lstat(full)
            except OSError as exc:
                raise ManifestError(path, f"cannot be read ({exc.strerror})") from exc
            is_dir = stat.S_ISDIR(st.st_mode)
            if rules.ignored(path, is_dir):
                ignored.append(path)
            elif is_dir:
                walk(path)
            elif stat.S_ISLNK(st.st_mode):
                entries.append(link_entry(path, os.readlink(full)))
            elif stat.S_ISREG(st.st_mode):
                try:
                    digest, size = file_sha256(full)
                except OSError as exc:
                    raise ManifestError(path, f"cannot be read ({exc.strerror})") from exc
                entries.append(ManifestEntry(path, "file", bool(st.st_mode & 0o111), digest, size))
            else:
                raise ManifestError(path, "is not a file, a directory or a symlink")

    walk("")
    entries.sort(key=lambda e: _path_bytes(e.path))
    return Scan(tuple(entries), tuple(ignored))
