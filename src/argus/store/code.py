"""Code snapshots and which tasks use them (issue 12).

Owns `code_snapshots` and `task_code`. Invariants: a snapshot row is one user's, keyed by
(user, sha256), so every read here takes the user and never answers another user's rows; a
push of content the user already has keeps the row (and its `created_at`) and only renames it
and moves `updated_at`, so a name means the snapshot pushed under it most recently; a task's
uses are written once, at accept, all in one transaction. Reads hand out frozen `CodeSnapshot`
records (`argus.domain.code`).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

import sqlalchemy as sa

from argus.domain.code import CodeSnapshot
from argus.domain.task import FINAL_STATES
from argus.store.db import Database
from argus.store.schema import code_snapshots, task_code, tasks

_FINAL = sorted(s.value for s in FINAL_STATES)


class AmbiguousPrefix(Exception):
    """A hash prefix matches more than one snapshot: `shas` lists them."""

    def __init__(self, prefix: str, shas: list[str]):
        super().__init__(f"{prefix} matches {len(shas)} snapshots")
        self.prefix = prefix
        self.shas = shas


def _snapshot(r: sa.Row) -> CodeSnapshot:
    return CodeSnapshot(
        user_id=r.user_id,
        sha256=r.sha256,
        name=r.name,
        size_bytes=r.size_bytes,
        files=r.files,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _newest_first(q: sa.Select) -> sa.Select:
    return q.order_by(code_snapshots.c.updated_at.desc(), code_snapshots.c.sha256)


class CodeStore:
    """Users' code snapshots (rows; the files are the service's) and which tasks read them."""

    def __init__(self, db: Database):
        self.db = db

    # -- snapshots ------------------------------------------------------------------------------
    def add(self, user_id: str, sha256: str, name: str, size_bytes: int, files: int, now: float) -> CodeSnapshot:
        """Store a pushed snapshot, or, when the user has it already, rename it `name` and make
        it the newest (`updated_at = now`; size, files and `created_at` stay).

        Returns:
            The snapshot as stored.
        """
        for _ in range(2):  # a concurrent first push of the same content: the second one updates
            touched = self.touch(user_id, sha256, name, now)
            if touched is not None:
                return touched
            try:
                with self.db.write.begin() as conn:
                    conn.execute(
                        code_snapshots.insert().values(
                            user_id=user_id,
                            sha256=sha256,
                            name=name,
                            size_bytes=size_bytes,
                            files=files,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                return CodeSnapshot(user_id, sha256, name, size_bytes, files, now, now)
            except sa.exc.IntegrityError:
                continue
        raise RuntimeError(f"snapshot {sha256} of {user_id} could be neither inserted nor updated")

    def touch(self, user_id: str, sha256: str, name: str, now: float) -> CodeSnapshot | None:
        """Rename the user's snapshot `name` and make it the newest; None when they have no such one."""
        with self.db.write.begin() as conn:
            res = conn.execute(
                code_snapshots.update()
                .where(code_snapshots.c.user_id == user_id, code_snapshots.c.sha256 == sha256)
                .values(name=name, updated_at=now)
            )
            if res.rowcount != 1:
                return None
            r = conn.execute(
                sa.select(code_snapshots).where(code_snapshots.c.user_id == user_id, code_snapshots.c.sha256 == sha256)
            ).one()
            return _snapshot(r)

    def get(self, user_id: str, sha256: str) -> CodeSnapshot | None:
        with self.db.read.connect() as conn:
            r = conn.execute(
                sa.select(code_snapshots).where(code_snapshots.c.user_id == user_id, code_snapshots.c.sha256 == sha256)
            ).first()
            return None if r is None else _snapshot(r)

    def list(self, user_id: str) -> list[CodeSnapshot]:
        """The user's snapshots, most recently pushed first."""
        with self.db.read.connect() as conn:
            q = _newest_first(sa.select(code_snapshots).where(code_snapshots.c.user_id == user_id))
            return [_snapshot(r) for r in conn.execute(q)]

    def newest_named(self, user_id: str, name: str) -> CodeSnapshot | None:
        """The user's snapshot pushed most recently under `name`."""
        with self.db.read.connect() as conn:
            q = _newest_first(
                sa.select(code_snapshots).where(code_snapshots.c.user_id == user_id, code_snapshots.c.name == name)
            ).limit(1)
            r = conn.execute(q).first()
            return None if r is None else _snapshot(r)

    def by_prefix(self, user_id: str, prefix: str) -> CodeSnapshot | None:
        """The user's one snapshot whose hash starts with `prefix` (lower-case hex), else None.

        Raises:
            AmbiguousPrefix: more than one does.
        """
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return None
        with self.db.read.connect() as conn:
            q = (
                sa.select(code_snapshots)
                .where(code_snapshots.c.user_id == user_id, code_snapshots.c.sha256.startswith(prefix))
                .order_by(code_snapshots.c.sha256)
                .limit(10)
            )
            rows = [_snapshot(r) for r in conn.execute(q)]
        if len(rows) > 1:
            raise AmbiguousPrefix(prefix, [s.sha256 for s in rows])
        return rows[0] if rows else None

    def delete(self, user_id: str, sha256: str) -> bool:
        """Forget the user's snapshot (the rows of tasks that used it stay). False when there was none."""
        with self.db.write.begin() as conn:
            res = conn.execute(
                code_snapshots.delete().where(code_snapshots.c.user_id == user_id, code_snapshots.c.sha256 == sha256)
            )
            return res.rowcount == 1

    # -- tasks that use them --------------------------------------------------------------------
    def record_uses(self, task_id: str, user_id: str, shas: Iterable[str], code_sha: str | None) -> None:
        """Record the snapshots `task_id` reads, replacing what was recorded for it before.

        Args:
            shas: every snapshot the task's paths lie in.
            code_sha: the one its TaskSpec's `code:` was pinned to (recorded with `via_code`),
                included even when absent from `shas`.
        """
        wanted = dict.fromkeys(shas, False)
        if code_sha is not None:
            wanted[code_sha] = True
        with self.db.write.begin() as conn:
            conn.execute(task_code.delete().where(task_code.c.task_id == task_id))
            if wanted:
                conn.execute(
                    task_code.insert(),
                    [{"task_id": task_id, "sha256": s, "user_id": user_id, "via_code": v} for s, v in wanted.items()],
                )

    def pinned_code(self, task_id: str) -> str | None:
        """The snapshot `task_id`'s `code:` was pinned to, else None."""
        with self.db.read.connect() as conn:
            r = conn.execute(
                sa.select(task_code.c.sha256).where(task_code.c.task_id == task_id, task_code.c.via_code.is_(True))
            ).first()
            return None if r is None else r.sha256

    def active_users_of(self, user_id: str, sha256: str) -> builtins.list[str]:
        """The tasks (oldest first) that use the user's snapshot and have not ended."""
        q = (
            sa.select(task_code.c.task_id)
            .join(tasks, tasks.c.task_id == task_code.c.task_id)
            .where(task_code.c.user_id == user_id, task_code.c.sha256 == sha256, tasks.c.state.not_in(_FINAL))
            .order_by(tasks.c.seq)
        )
        with self.db.read.connect() as conn:
            return [r.task_id for r in conn.execute(q)]

    def uses(self, user_id: str) -> dict[str, builtins.list[str]]:
        """sha256 -> the tasks (oldest first) recorded as using it, for each of the user's snapshots used."""
        q = (
            sa.select(task_code.c.sha256, task_code.c.task_id)
            .join(tasks, tasks.c.task_id == task_code.c.task_id, isouter=True)
            .where(task_code.c.user_id == user_id)
            .order_by(tasks.c.seq, task_code.c.task_id)
        )
        out: dict[str, builtins.list[str]] = {}
        with self.db.read.connect() as conn:
            for r in conn.execute(q):
                out.setdefault(r.sha256, []).append(r.task_id)
        return out
