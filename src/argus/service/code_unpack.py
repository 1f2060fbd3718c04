"""Unpacking an uploaded code archive (tar.gz) safely, for `argus.service.code_service`.

Owns what may come out of an archive and how it is written. Every member is checked before
anything of it is written: its name is relative and stays inside (no absolute path, no `..`);
it is a file, a directory, a symlink whose target stays inside, or a hard link to a file earlier
in the same archive (written as a copy); never a device, a fifo or a sparse file; never written
through a symlink or over an earlier member. The size is counted as the archive expands: the
declared size of each member before it is written, the bytes written, and every byte that comes
out of the decompressor (headers included), so a small body that expands past the limit is
stopped there, with nothing held in memory beyond the limit. After the last member every
symlink is resolved on disk and must stay inside. What goes wrong raises `Invalid` naming the
member (`archive member '<name>'`) or `TooLarge` naming the limit and the largest files; the
caller removes the directory, so nothing is left.
"""

from __future__ import annotations

import errno
import gzip
import heapq
import io
import os
import posixpath
import stat
import tarfile
import zlib
from typing import IO, Any, cast

from argus.domain.code import human_size
from argus.domain.errors import Invalid, TooLarge

MAX_MEMBERS = 100_000
# What the filesystem answers to a name it cannot hold: the member's fault, not the server's.
_NAME_ERRORS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ})
_CHUNK = 1024 * 1024
# What the decompressed stream may hold beyond the files: headers (tar blocks, pax and long-name
# records) and block padding, up to the limit again plus this much.
HEADER_SLACK = 16 * 1024 * 1024
_LIMIT_SETTING = "service.code_max_bytes"


def member_field(name: str) -> str:
    return f"archive member {name!r}"


def _refuse(name: str, reason: str) -> Invalid:
    return Invalid(f"the archive cannot be unpacked: {name!r} {reason}", [(member_field(name), reason)])


class _Budget:
    """The unpacked size so far and the largest files, for the 413 that names them."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.largest: list[tuple[int, str]] = []  # a min-heap of the 5 largest (size, name)

    def note(self, name: str, size: int) -> None:
        item = (size, name)
        if len(self.largest) < 5:
            heapq.heappush(self.largest, item)
        elif item > self.largest[0]:
            heapq.heapreplace(self.largest, item)

    def too_large(self, what: str) -> TooLarge:
        top = sorted(self.largest, reverse=True)
        names = ", ".join(f"{n} ({human_size(s)})" for s, n in top)
        return TooLarge(
            f"{what} is over the limit of {self.limit} bytes ({human_size(self.limit)}, {_LIMIT_SETTING})"
            + (f"; the largest files: {names}" if names else ""),
            [(member_field(n), human_size(s)) for s, n in top],
        )

    def reserve(self, name: str, size: int) -> None:
        """Count a member's declared size before writing it."""
        self.note(name, size)
        if self.used + size > self.limit:
            raise self.too_large("the code, unpacked,")
        self.used += size


class _Counted(io.RawIOBase):
    """The decompressed stream, stopped once more than `cap` bytes came out of it."""

    def __init__(self, raw: gzip.GzipFile, cap: int, budget: _Budget):
        self.raw, self.cap, self.budget, self.seen = raw, cap, budget, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.raw.read(min(len(b), _CHUNK))
        self.seen += len(data)
        if self.seen > self.cap:
            raise self.budget.too_large("the archive, unpacked,")
        b[: len(data)] = data
        return len(data)


def _clean_name(raw: str, is_dir: bool) -> str | None:
    """The member's relative POSIX path (None for the root itself).

    Raises:
        Invalid: absolute, with `..`, or with a NUL.
    """
    if "\x00" in raw:
        raise _refuse(raw, "has a NUL character in its name")
    if raw.startswith("/"):
        raise _refuse(raw, "is an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(raw, "has '..' in its path")
    if not parts:
        if is_dir:
            return None
        raise _refuse(raw, "has an empty name")
    return "/".join(parts)


def _escapes(path: str, target: str) -> bool:
    """Whether the link at `path` with `target` points outside the root, read lexically."""
    if target.startswith("/"):
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return joined == ".." or joined.startswith("../")


class _Writer:
    """Writes checked members under `root` (an empty directory)."""

    def __init__(self, root: str, budget: _Budget):
        self.root = root
        self.budget = budget
        self.files: dict[str, bool] = {}  # path -> executable, for hard links to them
        self.links: list[str] = []

    def _parent(self, name: str, path: str) -> None:
        """Make `path`'s parent directories, refusing one that is not a directory (a symlink)."""
        here = self.root
        for part in path.split("/")[:-1]:
            here = os.path.join(here, part)
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                os.mkdir(here, 0o700)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise _refuse(name, "lies under an earlier member that is not a directory")

    def _free(self, name: str, full: str) -> None:
        if os.path.lexists(full):
            raise _refuse(name, "appears twice in the archive")

    def directory(self, name: str, path: str) -> None:
        self._parent(name, path)
        full = os.path.join(self.root, path)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            os.mkdir(full, 0o700)
            return
        if not stat.S_ISDIR(st.st_mode):
            raise _refuse(name, "appears twice in the archive")

    def symlink(self, name: str, path: str, target: str) -> None:
        if not target or "\x00" in target:
            raise _refuse(name, "is a symlink with an empty target")
        if _escapes(path, target):
            raise _refuse(name, f"is a symlink pointing outside the archive ({target!r})")
        self._parent(name, path)
        full = os.path.join(self.root, path)
        self._free(name, full)
        self.budget.reserve(name, len(os.fsencode(target)))
        os.symlink(target, full)
        self.links.append(path)

    def file(self, name: str, path: str, size: int, executable: bool, data: IO[bytes]) -> None:
        self.budget.reserve(name, size)
        self._parent(name, path)
        full = os.path.join(self.root, path)
        self._free(name, full)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        written = 0
        with os.fdopen(fd, "wb") as out:
            os.fchmod(fd, 0o700 if executable else 0o600)  # the executable bit is part of the manifest
            while chunk := data.read(_CHUNK):
                written += len(chunk)
                if written > size:
                    raise _refuse(name, "holds more bytes than its header says")
                out.write(chunk)
        self.files[path] = executable

    def hardlink(self, name: str, path: str, raw_target: str) -> None:
        if raw_target.startswith("/") or ".." in raw_target.split("/"):
            raise _refuse(name, f"is a hard link outside the archive ({raw_target!r})")
        target = "/".join(p for p in raw_target.split("/") if p not in ("", "."))
        if target not in self.files:
            raise _refuse(name, f"is a hard link to {raw_target!r}, which is not a file earlier in the archive")
        source = os.path.join(self.root, target)
        with open(source, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as data:
            self.file(name, path, os.fstat(data.fileno()).st_size, self.files[target], data)

    def check_links(self) -> None:
        """Every symlink, resolved on disk now that all members are there, stays inside."""
        root = os.path.realpath(self.root)
        for path in self.links:
            resolved = os.path.realpath(os.path.join(self.root, path))
            if resolved != root and not resolved.startswith(root + os.sep):
                target = os.readlink(os.path.join(root, path))
                raise _refuse(path, f"is a symlink pointing outside the archive ({target!r})")


def unpack(body: bytes, root: str, limit: int, max_members: int = MAX_MEMBERS) -> dict[str, bool]:
    """Unpack the tar.gz `body` into the empty directory `root`, checking every member first.

    Files are written 0600 (0700 when executable) and directories 0700; the caller sets the
    final modes.

    Args:
        limit: the most bytes the files may hold, unpacked (`service.code_max_bytes`).
    Returns:
        Every regular file written (relative path) and whether it is executable.
    Raises:
        Invalid: the body is not a tar.gz archive, or a member is refused (`problems` names it).
        TooLarge: the archive expands past `limit`, or has more than `max_members` members.
    """
    budget = _Budget(limit)
    stream = _Counted(gzip.GzipFile(fileobj=io.BytesIO(body), mode="rb"), 2 * limit + HEADER_SLACK, budget)
    writer = _Writer(root, budget)
    members = 0
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream, _CHUNK), mode="r|") as tar:
            while (member := tar.next()) is not None:
                members += 1
                if members > max_members:
                    raise TooLarge(f"the archive has more than {max_members} members", [("<body>", "too many members")])
                try:
                    _one(tar, member, writer)
                except OSError as exc:
                    if exc.errno not in _NAME_ERRORS:
                        raise  # the server's own trouble (a full disk): a 500, logged
                    raise _refuse(member.name, f"cannot be written ({exc.strerror})") from None
                cast(Any, tar).members.clear()  # a stream keeps every header otherwise
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise Invalid("the body is not a tar.gz archive", [("<body>", str(exc) or type(exc).__name__)]) from None
    writer.check_links()
    return dict(writer.files)


def _one(tar: tarfile.TarFile, member: tarfile.TarInfo, writer: _Writer) -> None:
    raw = member.name
    path = _clean_name(raw, member.isdir())
    if path is None:
        return
    if member.isdir():
        writer.directory(raw, path)
    elif member.issym():
        writer.symlink(raw, path, member.linkname)
    elif member.islnk():
        writer.hardlink(raw, path, member.linkname)
    elif member.issparse():
        raise _refuse(raw, "is a sparse file")
    elif member.isreg():
        data = tar.extractfile(member)
        if data is None:
            raise _refuse(raw, "cannot be read")
        writer.file(raw, path, member.size, bool(member.mode & 0o111), data)
    elif member.ischr() or member.isblk():
        raise _refuse(raw, "is a device file")
    elif member.isfifo():
        raise _refuse(raw, "is a fifo")
    else:
        raise _refuse(raw, "is not a file, a directory or a link")
