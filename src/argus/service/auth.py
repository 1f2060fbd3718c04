"""Who is calling: `Authorization: Bearer <token>` to an `Identity`.

The admin token is the value of the variable named by `service.admin_token_env`, compared in
constant time; user tokens are looked up by their SHA-256 joined with the user's state on every
request, so disabling a user takes effect at once.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from argus.service.errors import APIError
from argus.store.users import UserStore

ADMIN = "admin"


@dataclass(frozen=True)
class Identity:
    user_id: str
    is_admin: bool

    def owns(self, row_user: str) -> bool:
        """Whether this caller may see a row of `row_user` (the admin sees everything)."""
        return self.is_admin or row_user == self.user_id


class Authenticator:
    def __init__(self, users: UserStore, admin_token: str | None):
        self.users = users
        self.admin_token = admin_token

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
        user = self.users.user_for_token(token)
        if user is None:
            raise APIError(401, "invalid token, or its user is disabled")
        return Identity(user, False)


def current_identity(request: Request) -> Identity:
    """FastAPI dependency: the caller, or 401."""
    return request.app.state.auth.identify(request.headers.get("authorization"))


def admin_identity(request: Request) -> Identity:
    """FastAPI dependency: the admin, or 401/403."""
    ident = current_identity(request)
    if not ident.is_admin:
        raise APIError(403, "this route is for the admin only")
    return ident
