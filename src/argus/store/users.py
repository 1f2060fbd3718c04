"""Users and their API tokens.

Owns `users` and `tokens`. Invariants: only a token's SHA-256 is stored, never the token; a
disabled user's tokens resolve to nobody from the moment `disable` commits (the lookup joins the
user's state, nothing is cached here).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import sqlalchemy as sa

from argus.store.db import Database
from argus.store.schema import tokens, users

ACTIVE = "ACTIVE"
DISABLED = "DISABLED"
TOKEN_PREFIX = "argus_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """32 random bytes, URL-safe, with a recognisable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class UserExists(Exception):
    pass


class UserStore:
    def __init__(self, db: Database):
        self.db = db

    def create(self, user_id: str, now: float) -> dict[str, Any]:
        """Raises: UserExists."""
        try:
            with self.db.write.begin() as conn:
                conn.execute(users.insert().values(user_id=user_id, state=ACTIVE, created_at=now))
        except sa.exc.IntegrityError:
            raise UserExists(user_id) from None
        return self.get(user_id)  # type: ignore[return-value]

    def get(self, user_id: str) -> dict[str, Any] | None:
        with self.db.read.connect() as conn:
            r = conn.execute(sa.select(users).where(users.c.user_id == user_id)).first()
            return None if r is None else dict(r._mapping)

    def list(self) -> list[dict[str, Any]]:
        with self.db.read.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(users).order_by(users.c.user_id))]

    def disable(self, user_id: str, now: float) -> bool:
        """False when there is no such user."""
        with self.db.write.begin() as conn:
            res = conn.execute(users.update().where(users.c.user_id == user_id)
                               .values(state=DISABLED, disabled_at=now))
            return res.rowcount == 1

    def issue_token(self, user_id: str, now: float) -> str:
        """A new token for an existing user; the plain token is returned only here."""
        token = new_token()
        with self.db.write.begin() as conn:
            conn.execute(tokens.insert().values(token_hash=hash_token(token), user_id=user_id,
                                                created_at=now))
        return token

    def user_for_token(self, token: str) -> str | None:
        """The active user owning `token`, else None."""
        q = (sa.select(users.c.user_id).join(tokens, tokens.c.user_id == users.c.user_id)
             .where(tokens.c.token_hash == hash_token(token), users.c.state == ACTIVE))
        with self.db.read.connect() as conn:
            r = conn.execute(q).first()
            return None if r is None else r.user_id
