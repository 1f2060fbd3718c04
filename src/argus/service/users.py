"""What the user routes do (seed 004): create, list, disable and enable users, issue tokens.

Owns the users' API bodies (`user_view`) and the times recorded for them: every time comes from
the injected clock, never from `time.time()`. Invariants: a token is issued only to an active
user (the store refuses a disabled one too); after every change to a user the authenticator's
memory of tokens is dropped, so a disabled user's next request is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from argus.domain.errors import Conflict, NotFound
from argus.domain.task import check_user_id
from argus.domain.users import User, UserState
from argus.service.auth import Authenticator
from argus.service.views import iso
from argus.store.users import UserExists, UserStore


def user_view(user: User) -> dict[str, Any]:
    """A user's API body: `{user_id, state, created_at}` (docs/api.md, Users)."""
    return {"user_id": user.user_id, "state": user.state.value, "created_at": iso(user.created_at)}


def _known_id(user_id: str) -> bool:
    """Whether `user_id` could name a user at all (junk is never looked up)."""
    try:
        check_user_id(user_id)
        return True
    except ValueError:
        return False


class UserService:
    """The admin's user actions over `UserStore`, timed by `clock`."""

    def __init__(self, store: UserStore, auth: Authenticator, clock: Callable[[], float]):
        self.store = store
        self.auth = auth
        self.clock = clock

    def create(self, user_id: str) -> dict[str, Any]:
        """Create an active user (its id already checked by the request model).

        Raises:
            Conflict: the user exists already.
        """
        try:
            return user_view(self.store.create(user_id, self.clock()))
        except UserExists:
            raise Conflict(f"user {user_id} exists already") from None

    def list(self) -> dict[str, Any]:
        return {"users": [user_view(u) for u in self.store.list()]}

    def issue_token(self, user_id: str) -> dict[str, Any]:
        """A new token for an active user; the plain token is shown only in this answer.

        Raises:
            NotFound: no such user. Conflict: the user is disabled.
        """
        user = self.store.get(user_id) if _known_id(user_id) else None
        if user is None:
            raise NotFound(f"no user {user_id}")
        token = self.store.issue_token(user_id, self.clock()) if user.active else None
        if token is None:
            raise Conflict(f"user {user_id} is disabled")
        return {"user_id": user_id, "token": token}

    def disable(self, user_id: str) -> dict[str, Any]:
        """Disable a user; every token of theirs is revoked at once, for good.

        Raises:
            NotFound: no such user.
        """
        if not _known_id(user_id) or not self.store.disable(user_id, self.clock()):
            raise NotFound(f"no user {user_id}")
        self.auth.forget()  # the user's tokens stop working with the next request
        return {"user_id": user_id, "state": UserState.DISABLED.value}

    def enable(self, user_id: str) -> dict[str, Any]:
        """Re-enable a disabled user (an active one is left as is); old tokens stay revoked.

        Raises:
            NotFound: no such user.
        """
        if not _known_id(user_id) or not self.store.enable(user_id):
            raise NotFound(f"no user {user_id}")
        self.auth.forget()  # nothing remembered from before survives the change
        return {"user_id": user_id, "state": UserState.ACTIVE.value}
