"""Who is calling: `Authorization: Bearer <token>` to an `Identity`.

The admin token is the value of the variable named by `service.admin_token_env`, compared in
constant time; user tokens are looked up by their SHA-256 joined with the user's state, so disabling a user
(which also revokes their tokens) takes effect at once. The short memory of token -> user is
dropped by every change to a user made through this server (`Authenticator.forget`), and a
lookup that raced such a change is never remembered, so a revoked token is never served from it.
With several API processes the forgetting is shared: `forget` also bumps the generation of the
`SharedState`, and each process drops its memory when it sees that generation move.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from argus.domain.users import ADMIN
from argus.service.errors import APIError
from argus.store.users import UserStore

if TYPE_CHECKING:
    from argus.service.shared_state import SharedState


@dataclass(frozen=True)
class Identity:
    user_id: str
    is_admin: bool

    def owns(self, row_user: str) -> bool:
        """Whether this caller may see a row of `row_user` (the admin sees everything)."""
        return self.is_admin or row_user == self.user_id


class Authenticator:
    """Resolves tokens; remembers a token's user for `ttl_s` seconds.

    The memory is dropped whenever a user is disabled through this server (`forget`), so a
    disabled user's next request is refused; the TTL bounds how long a change made to the
    database behind the server's back goes unnoticed. With `shared`, a `forget` in any of the
    server's API processes drops the memory of all of them before their next lookup.
    """

    def __init__(
        self,
        users: UserStore,
        admin_token: str | None,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedState | None = None,
    ):
        self.users = users
        self.admin_token = admin_token
        self.ttl_s = ttl_s
        self.clock = clock
        self._known: dict[str, tuple[str, float]] = {}
        self._generation = 0  # bumped by forget(): a lookup that began before is not kept
        self.shared = shared
        self._shared_seen = shared.generation() if shared is not None else 0

    def forget(self) -> None:
        self._generation += 1
        self._known.clear()
        if self.shared is not None:
            self.shared.bump()

    def _sync(self) -> None:
        """Forget here too when another process forgot (the shared generation moved)."""
        if self.shared is not None:
            seen = self.shared.generation()
            if seen != self._shared_seen:
                self._shared_seen = seen
                self._generation += 1
                self._known.clear()

    def _user(self, token: str) -> str | None:
        self._sync()
        hit = self._known.get(token)
        now = self.clock()
        if hit is not None and hit[1] > now:
            return hit[0]
        generation = self._generation
        user = self.users.user_for_token(token)
        self._sync()
        if user is not None and generation == self._generation:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[token] = (user, now + self.ttl_s)
        else:
            self._known.pop(token, None)
        return user

    def identify(self, header: str | None) -> Identity:
        """Raises: APIError 401 for a missing, malformed, unknown or disabled token."""
        if not header:
            raise APIError(401, "missing Authorization header (expected 'Bearer <token>')")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise APIError(401, "malformed Authorization header (expected 'Bearer <token>')")
        if self.admin_token and hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return Identity(ADMIN, True)
        user = self._user(token)
        if user is None:
            raise APIError(401, "invalid token, or its user is disabled")
        return Identity(user, False)


async def current_identity(request: Request) -> Identity:
    """FastAPI dependency: the caller, or 401.

    Runs on the event loop: the lookup is one indexed read, cheaper than a thread hop."""
    return request.app.state.auth.identify(request.headers.get("authorization"))


async def admin_identity(request: Request) -> Identity:
    """FastAPI dependency: the admin, or 401/403."""
    ident = await current_identity(request)
    if not ident.is_admin:
        raise APIError(403, "this route is for the admin only")
    return ident
