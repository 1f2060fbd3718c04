"""The code snapshot methods of the Argus SDK: `CodeMixin`, which `argus.client.sdk.ArgusClient` inherits.

Owns the `/api/v2/code` conversation: pushing a directory (`push_code`), listing and deleting
snapshots, and `code_archive`, the deterministic tar.gz of what a directory's manifest keeps.
A push hashes the directory first with the server's own code (`argus.domain.code_manifest`)
and asks whether the user has that snapshot; when they do, nothing is uploaded (the snapshot is
only renamed and made the newest of its name, by hash); otherwise the kept files go up as one
archive. Invariants: the archive holds exactly the manifest's entries, in path order, with
fixed times, owners and modes (0755 executable, 0644 not), so the same tree makes the same
bytes and the server computes the same hash.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from urllib.parse import quote

from argus.client.sdk_http import ApiSession, ArgusAPIError
from argus.domain.code import default_name, human_size
from argus.domain.code_manifest import ManifestEntry, scan

ARCHIVE_CONTENT_TYPE = "application/gzip"


def code_path(ref: str, suffix: str = "") -> str:
    """The path of one snapshot's route, the ref quoted as a single path segment.

    Raises:
        ValueError: the ref is empty.
    """
    if not ref:
        raise ValueError("snapshot ref must not be empty")
    segment = quote(ref, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/api/v2/code/{segment}{suffix}"


def code_archive(directory: str, entries: tuple[ManifestEntry, ...]) -> bytes:
    """The tar.gz of `entries` (from `scan(directory)`), byte for byte the same for the same tree.

    Raises:
        OSError: a file cannot be read (or changed kind since the scan).
    """
    raw = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for e in entries:
            full = os.path.join(directory, e.path)
            info = tarfile.TarInfo(e.path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if e.kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(full), 0o777
                tar.addfile(info)
                continue
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                info.size = os.fstat(f.fileno()).st_size
                info.mode = 0o755 if e.executable else 0o644
                tar.addfile(info, f)
    return raw.getvalue()


def with_largest_files(exc: ArgusAPIError, entries: tuple[ManifestEntry, ...], n: int = 5) -> ArgusAPIError:
    """`exc` (a 413 for the archive's size) with the directory's `n` largest files named."""
    largest = sorted(entries, key=lambda e: (-e.size, e.path))[:n]
    named = ", ".join(f"{e.path} ({human_size(e.size)})" for e in largest)
    problems = [{"field": e.path, "message": human_size(e.size)} for e in largest]
    return ArgusAPIError(exc.status, exc.error, f"{exc.message}; the largest files: {named}", problems)


class CodeMixin(ApiSession):
    """`ArgusClient`'s code snapshot methods, over the session's `_json`."""

    def push_code(self, directory: str, name: str | None = None) -> dict:
        """Push `directory` as a code snapshot, uploading nothing when the user has it already.

        Args:
            directory: the directory; `.git`, `__pycache__` and what its `.argusignore` names are
                left out.
            name: the snapshot's name (default: the directory's own name).
        Returns:
            The service's answer (`sha256`, `name`, `path`, `size_bytes`, `files`, ...) with
            `unchanged` (true: nothing was uploaded) and `bytes_uploaded` (0, or the archive's size).
        Raises:
            NotADirectoryError: `directory` is not a directory.
            ManifestError: a path in it is neither a file, a directory nor a symlink, or unreadable.
            ArgusAPIError: 400 naming the member or the name, 413 over `service.code_max_bytes`.
        """
        found = scan(directory)
        name = name or default_name(os.path.abspath(directory))
        try:
            self._json("GET", code_path(found.sha256))
        except ArgusAPIError as exc:
            if exc.status != 404:
                raise
        else:
            try:
                return self._json("POST", code_path(found.sha256, ":touch"), params={"name": name})
            except ArgusAPIError as exc:
                if exc.status != 404:  # deleted between the two calls: upload it after all
                    raise
        body = code_archive(directory, found.entries)
        try:
            return self._json(
                "POST",
                "/api/v2/code",
                params={"name": name},
                content=body,
                headers={"Content-Type": ARCHIVE_CONTENT_TYPE},
            )
        except ArgusAPIError as exc:
            if exc.status == 413 and not exc.problems:  # refused by its size alone: say what is large here
                raise with_largest_files(exc, found.entries) from None
            raise

    def code_snapshots(self) -> dict:
        """`{"snapshots": [...]}`: the user's snapshots, most recently pushed first, each with its tasks."""
        return self._json("GET", "/api/v2/code")

    def code_snapshot(self, ref: str) -> dict:
        """One snapshot by hash, hash prefix (8+ hex characters) or name."""
        return self._json("GET", code_path(ref))

    def delete_code(self, ref: str) -> dict:
        """Delete a snapshot (hash, prefix or name).

        Returns:
            `{"sha256", "name", "deleted": true}`.
        Raises:
            ArgusAPIError: 409 while a task that has not ended uses it, 404 when unknown.
        """
        return self._json("DELETE", code_path(ref))
