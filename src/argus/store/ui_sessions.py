"""Console sessions: the `ui_sessions` table.

Owns every access to `ui_sessions`. A row is made at login (`create`) and looked up on each
console request by the SHA-256 of the session id the browser holds (`get`); logout revokes one
row, disabling a user revokes all of theirs (`revoke_user`, also done by
`argus.store.users.UserStore.disable` in its own transaction). Expired rows are deleted by
`purge`. Times are epoch seconds passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from argus.store.db import Database
from argus.store.schema import ui_sessions


@dataclass(frozen=True, slots=True)
class UiSessionRow:
    """One console session as stored (never the id itself, only its hash)."""

    id_hash: str
    user_id: str
    is_admin: bool
    csrf: str
    token_fp: str | None
    created_at: float
    expires_at: float
    revoked_at: float | None

    def good_at(self, now: float) -> bool:
        """Not revoked and not expired at `now`."""
        return self.revoked_at is None and now < self.expires_at


class UiSessionStore:
    """Console sessions in one database."""

    def __init__(self, db: Database):
        self.db = db

    def create(
        self,
        id_hash: str,
        user_id: str,
        is_admin: bool,
        csrf: str,
        now: float,
        expires_at: float,
        token_fp: str | None = None,
    ) -> None:
        with self.db.write.begin() as conn:
            conn.execute(
                ui_sessions.insert().values(
                    id_hash=id_hash,
                    user_id=user_id,
                    is_admin=is_admin,
                    csrf=csrf,
                    token_fp=token_fp,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    def get(self, id_hash: str) -> UiSessionRow | None:
        with self.db.read.connect() as conn:
            row = conn.execute(sa.select(ui_sessions).where(ui_sessions.c.id_hash == id_hash)).first()
        return None if row is None else UiSessionRow(**row._mapping)

    def revoke(self, id_hash: str, now: float) -> bool:
        """Revoke one session (logout). Returns whether a live one was revoked."""
        with self.db.write.begin() as conn:
            res = conn.execute(
                ui_sessions.update()
                .where(ui_sessions.c.id_hash == id_hash, ui_sessions.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return res.rowcount == 1

    def revoke_user(self, user_id: str, now: float) -> int:
        """Revoke every live session of `user_id`; returns how many."""
        with self.db.write.begin() as conn:
            return revoke_user_sessions(conn, user_id, now)

    def purge(self, before: float) -> int:
        """Delete the sessions that expired before `before`; returns how many."""
        with self.db.write.begin() as conn:
            return conn.execute(ui_sessions.delete().where(ui_sessions.c.expires_at < before)).rowcount


def revoke_user_sessions(conn: sa.Connection, user_id: str, now: float) -> int:
    """In the caller's transaction: revoke every live console session of `user_id`."""
    res = conn.execute(
        ui_sessions.update()
        .where(ui_sessions.c.user_id == user_id, ui_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return res.rowcount
