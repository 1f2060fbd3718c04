"""What the code snapshot routes do (issue 12): push, touch, read, list, delete, and resolve refs.

Owns the snapshots on disk, `<shared_root>/users/<user>/code/<sha256>/`, and their API bodies.
Invariants: a snapshot is only ever one user's: every call takes the caller's own user id, and
another user's snapshot is "not found", word for word as a missing one. A push unpacks into a
fresh `.push-*` directory inside the user's code directory (`argus.service.code_unpack` checks
every member), hashes what it holds with the client's own code (`argus.domain.code_manifest`:
what the ignore rules leave out is removed, then empty directories), makes files 0440 (0550
when executable) and directories 0550, and renames it to `<sha256>/`; when that exists already
the new copy is dropped. Whatever fails removes the `.push-*` directory: nothing is left. A
snapshot that a task which has not ended uses is never deleted (409 naming the tasks). The times
recorded come from the injected clock; a crash's leftovers (`.push-*`, `.trash-*` a day old by
their file times) are swept at the next push.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from argus.domain.code import SHA256_RE, CodeSnapshot, code_name_problem, looks_like_prefix
from argus.domain.code_manifest import ManifestError, scan
from argus.domain.errors import Conflict, Invalid, NotFound
from argus.domain.paths import code_root, snapshot_dir
from argus.service.auth import Identity
from argus.service.code_unpack import unpack
from argus.service.views import iso
from argus.settings import ArgusSettings
from argus.store.code import AmbiguousPrefix, CodeStore

PUSH_PREFIX = ".push-"
TRASH_PREFIX = ".trash-"
STALE_S = 24 * 3600  # a `.push-*` or `.trash-*` directory this old was left by a crash


def remove_tree(path: str | Path) -> None:
    """Remove a directory tree, read-only directories included (links are never followed)."""
    path = str(path)
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    for here, dirs, _ in os.walk(path):
        os.chmod(here, 0o700)
        for d in dirs:
            full = os.path.join(here, d)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
    shutil.rmtree(path)


def _seal(root: str) -> None:
    """Files 0440 (0550 when executable), directories 0550, bottom-up; symlinks as they are:
    read-only, and nothing for other accounts on the machine (like everything under `users/`)."""
    for here, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            full = os.path.join(here, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                os.chmod(full, 0o550 if st.st_mode & 0o111 else 0o440)
            elif stat.S_ISDIR(st.st_mode):
                os.chmod(full, 0o550)
    os.chmod(root, 0o550)


def _prune(root: str, ignored: tuple[str, ...]) -> None:
    """Remove what the ignore rules left out, then every empty directory."""
    for rel in ignored:
        remove_tree(os.path.join(root, rel))
    for here, _, _ in os.walk(root, topdown=False):
        if here != root and not os.listdir(here):
            os.rmdir(here)


def _sweep(base: Path, now: float) -> None:
    """Remove what a push or a delete cut short (a crash) left in the user's code directory."""
    for entry in os.scandir(base):
        if entry.name.startswith((PUSH_PREFIX, TRASH_PREFIX)):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < now - STALE_S:
                    remove_tree(entry.path)
            except OSError:
                continue  # another push or delete took it


def _name(name: str) -> str:
    problem = code_name_problem(name)
    if problem is not None:
        raise Invalid(f"invalid snapshot name {name!r}: {problem}", [("name", problem)])
    return name


class CodeService:
    """The code snapshot actions of one user at a time, over `CodeStore` and the shared root."""

    def __init__(self, settings: ArgusSettings, store: CodeStore, clock: Callable[[], float]):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.limit = settings.service.code_max_bytes
        # Held while a snapshot directory appears or goes together with its row (push vs delete).
        self._commit = threading.Lock()

    # -- for the task side --------------------------------------------------------------------
    def snapshot_path(self, user_id: str, sha: str) -> str:
        """`<shared_root>/users/<user>/code/<sha256>` (as the server sees the shared root)."""
        return str(snapshot_dir(self.settings.shared_root, user_id, sha))

    @contextmanager
    def holding(self, user_id: str, shas: list[str]) -> Iterator[Callable[[str, str | None], None]]:
        """Keep the user's snapshots `shas` from being deleted while a task that reads them is
        stored (under the lock `delete` checks uses in); yields `record(task_id, code_sha)`,
        which notes the task's uses.

        Raises:
            Conflict: one of them was deleted since the task's spec named it.
        """
        with self._commit:
            gone = [s for s in shas if self.store.get(user_id, s) is None]
            if gone:
                raise Conflict(f"code snapshot {gone[0][:12]} was deleted while the task was being accepted")
            yield lambda task_id, code_sha: self.store.record_uses(task_id, user_id, shas, code_sha)

    def resolve(self, user_id: str, ref: str) -> CodeSnapshot:
        """The user's snapshot `ref` names: a name (its newest snapshot), else a hash prefix of
        at least `MIN_PREFIX` hex characters.

        Raises:
            NotFound: no snapshot of the user's answers to `ref` (another user's neither).
            Invalid: the prefix matches several snapshots (`problems` names `ref`).
        """
        found = self.store.newest_named(user_id, ref) if code_name_problem(ref) is None else None
        if found is None and looks_like_prefix(ref):
            try:
                found = self.store.by_prefix(user_id, ref)
            except AmbiguousPrefix as exc:
                shown = ", ".join(s[:12] for s in exc.shas)
                reason = f"matches several snapshots ({shown}); give more of the hash"
                raise Invalid(f"code snapshot {ref!r} is ambiguous: {reason}", [("ref", reason)]) from None
        if found is None:
            raise NotFound(f"no code snapshot {ref!r}")
        return found

    # -- views ----------------------------------------------------------------------------------
    def _body(self, snap: CodeSnapshot) -> dict[str, Any]:
        return {
            "sha256": snap.sha256,
            "name": snap.name,
            "path": self.snapshot_path(snap.user_id, snap.sha256),
            "size_bytes": snap.size_bytes,
            "files": snap.files,
            "created_at": iso(snap.created_at),
            "updated_at": iso(snap.updated_at),
        }

    def view(self, snap: CodeSnapshot, tasks: list[str]) -> dict[str, Any]:
        """A snapshot's API body (docs/api.md, Code): `CodeSnapshotBody`."""
        return {**self._body(snap), "tasks": tasks}

    def _pushed(self, snap: CodeSnapshot, unchanged: bool, uploaded: int) -> dict[str, Any]:
        return {**self._body(snap), "unchanged": unchanged, "bytes_uploaded": uploaded}

    # -- routes ---------------------------------------------------------------------------------
    def get(self, who: Identity, ref: str) -> dict[str, Any]:
        """The caller's snapshot `ref` names (a hash, a prefix or a name). Raises: NotFound, Invalid."""
        snap = self.resolve(who.user_id, ref)
        return self.view(snap, self.store.uses(who.user_id).get(snap.sha256, []))

    def list(self, who: Identity) -> dict[str, Any]:
        """The caller's snapshots, most recently pushed first, each with the tasks recorded as using it."""
        uses = self.store.uses(who.user_id)
        return {"snapshots": [self.view(s, uses.get(s.sha256, [])) for s in self.store.list(who.user_id)]}

    def touch(self, who: Identity, sha: str, name: str) -> dict[str, Any]:
        """Push again, by hash, content the caller has: it takes `name` and is its newest (nothing uploaded).

        Raises:
            NotFound: the caller has no snapshot with this hash. Invalid: a bad name.
        """
        _name(name)
        with self._commit:
            on_disk = SHA256_RE.fullmatch(sha) and os.path.isdir(self.snapshot_path(who.user_id, sha))
            snap = self.store.touch(who.user_id, sha, name, self.clock()) if on_disk else None
        if snap is None:
            raise NotFound(f"no code snapshot {sha!r}")
        return self._pushed(snap, True, 0)

    def push(self, who: Identity, body: bytes, name: str) -> dict[str, Any]:
        """Unpack a tar.gz into a new snapshot (or find the caller already has it).

        Blocking (disk): call it off the event loop.

        Returns:
            The snapshot with `unchanged` (the caller had this content already) and
            `bytes_uploaded` (the body's size).
        Raises:
            Invalid: a bad name, not a tar.gz, a member refused (named), or no file in it.
            TooLarge: it expands past `service.code_max_bytes` (the largest files named).
        """
        _name(name)
        if not body:
            raise Invalid("the body is empty: send the code as a tar.gz archive", [("<body>", "must not be empty")])
        base = Path(code_root(self.settings.shared_root, who.user_id))
        base.mkdir(parents=True, exist_ok=True)
        _sweep(base, time.time())  # compared with file times, which the wall clock writes
        work = base / f"{PUSH_PREFIX}{secrets.token_hex(8)}"
        work.mkdir(mode=0o700)
        try:
            unpack(body, str(work), self.limit)
            try:
                found = scan(str(work))
            except ManifestError as exc:
                raise Invalid(
                    f"the archive cannot be unpacked: {exc}", [(f"archive member {exc.path!r}", exc.reason)]
                ) from None
            if not found.entries:
                raise Invalid("the archive holds no files", [("<body>", "holds no files (after the ignore rules)")])
            _prune(str(work), found.ignored)
            _seal(str(work))
            sha = found.sha256
            final = base / sha
            with self._commit:
                unchanged = final.is_dir()
                if not unchanged:
                    os.rename(work, final)
                snap = self.store.add(who.user_id, sha, name, found.size_bytes, len(found.entries), self.clock())
        finally:
            remove_tree(work)
        return self._pushed(snap, unchanged, len(body))

    def delete(self, who: Identity, ref: str) -> dict[str, Any]:
        """Delete the caller's snapshot `ref` names, row and files.

        Raises:
            NotFound: no such snapshot of the caller's. Invalid: an ambiguous prefix.
            Conflict: a task that has not ended uses it (the message names the tasks).
        """
        snap = self.resolve(who.user_id, ref)
        with self._commit:
            active = self.store.active_users_of(who.user_id, snap.sha256)
            if active:
                shown = ", ".join(active[:10]) + (f" and {len(active) - 10} more" if len(active) > 10 else "")
                raise Conflict(
                    f"code snapshot {snap.sha256[:12]} ({snap.name}) is used by tasks that have not ended: {shown}"
                )
            if not self.store.delete(who.user_id, snap.sha256):
                raise NotFound(f"no code snapshot {ref!r}")
            final = Path(self.snapshot_path(who.user_id, snap.sha256))
            trash = final.with_name(f"{TRASH_PREFIX}{secrets.token_hex(8)}")
            if final.is_dir():
                os.rename(final, trash)
        remove_tree(trash)
        return {"sha256": snap.sha256, "name": snap.name, "deleted": True}
