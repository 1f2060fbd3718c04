"""Users and their API tokens.

Owns `users` and `tokens`. Invariants: only a token's SHA-256 is stored, never the token;
disabling a user revokes (deletes) every token they have, in the same transaction, and the lookup
joins the user's state, so a disabled user's tokens resolve to nobody from the moment `disable`
commits (nothing is cached here); re-enabling revokes again whatever a race may have slipped in,
so no token issued before a re-enable ever works after it; a token is only issued to an active
user. Reads hand out frozen `User` records (`argus.domain.users`).
"""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa

from argus.domain.users import User, UserState
from argus.store.db import Database
from argus.store.schema import tokens, users
from argus.store.ui_sessions import revoke_user_sessions

ACTIVE = UserState.ACTIVE.value
DISABLED = UserState.DISABLED.value
TOKEN_PREFIX = "argus_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """32 random bytes, URL-safe, with a recognisable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class UserExists(Exception):
    pass


def _user(r: sa.Row) -> User:
    return User(user_id=r.user_id, state=UserState(r.state), created_at=r.created_at, disabled_at=r.disabled_at)


class UserStore:
    def __init__(self, db: Database):
        self.db = db

    def create(self, user_id: str, now: float) -> User:
        """Store a new active user.

        Args:
            user_id: the user (already checked).
            now: the user's `created_at`.
        Returns:
            The user as stored.
        Raises:
            UserExists: `user_id` is taken.
        """
        try:
            with self.db.write.begin() as conn:
                conn.execute(users.insert().values(user_id=user_id, state=ACTIVE, created_at=now))
        except sa.exc.IntegrityError:
            raise UserExists(user_id) from None
        return User(user_id=user_id, state=UserState.ACTIVE, created_at=now)

    def get(self, user_id: str) -> User | None:
        with self.db.read.connect() as conn:
            r = conn.execute(sa.select(users).where(users.c.user_id == user_id)).first()
            return None if r is None else _user(r)

    def list(self) -> list[User]:
        """Every user, by id."""
        with self.db.read.connect() as conn:
            return [_user(r) for r in conn.execute(sa.select(users).order_by(users.c.user_id))]

    def disable(self, user_id: str, now: float) -> bool:
        """Disable `user_id` and revoke every token they have.

        Args:
            user_id: the user.
            now: the time recorded as `disabled_at`.
        Returns:
            False when there is no such user.
        """
        with self.db.write.begin() as conn:
            res = conn.execute(users.update().where(users.c.user_id == user_id).values(state=DISABLED, disabled_at=now))
            if res.rowcount != 1:
                return False
            conn.execute(tokens.delete().where(tokens.c.user_id == user_id))
            revoke_user_sessions(conn, user_id, now)  # their console sessions end too
            return True

    def enable(self, user_id: str) -> bool:
        """Make a disabled user active again, with no token: old tokens stay revoked.

        An active user is left as is (their tokens too).

        Args:
            user_id: the user.
        Returns:
            False when there is no such user.
        """
        with self.db.write.begin() as conn:
            res = conn.execute(
                users.update()
                .where(users.c.user_id == user_id, users.c.state == DISABLED)
                .values(state=ACTIVE, disabled_at=None)
            )
            if res.rowcount == 1:
                # Whatever was issued while the user was disabled (a race with `disable`) goes too.
                conn.execute(tokens.delete().where(tokens.c.user_id == user_id))
                return True
            return conn.execute(sa.select(users.c.user_id).where(users.c.user_id == user_id)).first() is not None

    def issue_token(self, user_id: str, now: float) -> str | None:
        """A new token for an active user; the plain token is returned only here.

        Args:
            user_id: the user.
            now: the token's `created_at`.
        Returns:
            The token, or None when the user does not exist or is disabled (nothing stored).
        """
        token = new_token()
        active = sa.select(sa.literal(hash_token(token)), users.c.user_id, sa.literal(now)).where(
            users.c.user_id == user_id, users.c.state == ACTIVE
        )
        with self.db.write.begin() as conn:
            stored = conn.execute(
                tokens.insert().from_select(["token_hash", "user_id", "created_at"], active).returning(tokens.c.user_id)
            ).first()
        return token if stored is not None else None

    def user_for_token(self, token: str) -> str | None:
        """The active user owning `token`, else None."""
        q = (
            sa.select(users.c.user_id)
            .join(tokens, tokens.c.user_id == users.c.user_id)
            .where(tokens.c.token_hash == hash_token(token), users.c.state == ACTIVE)
        )
        with self.db.read.connect() as conn:
            r = conn.execute(q).first()
            return None if r is None else r.user_id
