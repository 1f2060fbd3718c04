"""Console logins: a token in, a signed session cookie out; CSRF tokens.

Owns `ConsoleSessions`. A login checks the token exactly as the API does
(`argus.service.auth.Authenticator`) and makes a server-side session (`ui_sessions`): a random
id, of which only the SHA-256 is stored, and a CSRF token. The browser gets
`argus_session=<id>.<HMAC-SHA256 of the id>` (HttpOnly, SameSite=Strict, Path=/ui, Max-Age the
session's life). Each request checks the signature, the row (not revoked, not expired) and, for
a user, that the user is still active, so disabling a user ends their sessions at once; logout
revokes the row. An admin session keeps a keyed fingerprint of the admin token it logged in with,
so a new admin token ends it. The token itself is never stored, put in a URL or a page, or
logged. Expired rows are deleted as new sessions are made.

The login form, made before any session exists, carries a CSRF token of its own, checked
against a short-lived cookie (`argus_login_csrf`, the double-submit pattern).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from argus.domain.users import ADMIN
from argus.service.auth import Authenticator, Identity
from argus.service.errors import APIError
from argus.store.ui_sessions import UiSessionStore
from argus.store.users import UserStore

COOKIE = "argus_session"
LOGIN_CSRF_COOKIE = "argus_login_csrf"
COOKIE_PATH = "/ui"
LOGIN_CSRF_TTL_S = 3600


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A logged-in browser: who, the CSRF token its forms carry, when it ends."""

    identity: Identity
    csrf: str
    id_hash: str
    expires_at: float


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleSessions:
    """Logins, lookups and logouts of console sessions."""

    def __init__(
        self,
        store: UiSessionStore,
        users: UserStore,
        auth: Authenticator,
        key: str | None,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ):
        """`key`: the signing key (None: a random one, so sessions end with this process)."""
        self.store = store
        self.users = users
        self.auth = auth
        self._key = (key or secrets.token_hex(32)).encode()
        self.ttl_s = ttl_s
        self.clock = clock

    # -- the cookie --------------------------------------------------------------------------
    def _sign(self, value: str) -> str:
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()

    def _admin_fp(self) -> str | None:
        """A keyed fingerprint of the admin token now in force (None: there is none)."""
        token = self.auth.admin_token
        return None if not token else self._sign("admin-token:" + token)

    def cookie_value(self, session_id: str) -> str:
        return f"{session_id}.{self._sign(session_id)}"

    def _session_id(self, cookie: str | None) -> str | None:
        """The session id a cookie carries, when its signature is ours."""
        if not cookie or cookie.count(".") != 1:
            return None
        session_id, sig = cookie.split(".")
        if len(session_id) != 64 or not hmac.compare_digest(sig, self._sign(session_id)):
            return None
        return session_id

    # -- login, lookup, logout -----------------------------------------------------------------
    def login(self, token: str) -> tuple[str, ConsoleSession]:
        """A new session for the holder of `token`.

        Returns:
            The cookie value and the session.

        Raises:
            APIError: 401 for an unknown token or a disabled user's.
        """
        identity = self.auth.identify(f"Bearer {token.strip()}" if token.strip() else None)
        session_id, csrf = secrets.token_hex(32), secrets.token_hex(32)
        now = self.clock()
        expires = now + self.ttl_s
        id_hash = _hash(session_id)
        self.store.purge(now)  # expired sessions go as new ones come
        fp = self._admin_fp() if identity.is_admin else None
        self.store.create(id_hash, identity.user_id, identity.is_admin, csrf, now, expires, fp)
        return self.cookie_value(session_id), ConsoleSession(identity, csrf, id_hash, expires)

    def resolve(self, cookie: str | None) -> ConsoleSession | None:
        """The live session a cookie names, or None (bad signature, unknown, revoked, expired,
        or its user disabled since)."""
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        row = self.store.get(_hash(session_id))
        if row is None or not row.good_at(self.clock()):
            return None
        if row.is_admin:
            fp = self._admin_fp()
            if row.user_id != ADMIN or fp is None or not hmac.compare_digest(row.token_fp or "", fp):
                return None  # the admin token changed (or is gone) since this login
        else:
            user = self.users.get(row.user_id)
            if user is None or not user.active:
                return None
        return ConsoleSession(Identity(row.user_id, row.is_admin), row.csrf, row.id_hash, row.expires_at)

    def logout(self, session: ConsoleSession) -> None:
        self.store.revoke(session.id_hash, self.clock())

    # -- CSRF -------------------------------------------------------------------------------------
    @staticmethod
    def csrf_ok(expected: str | None, given: str | None) -> bool:
        return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))

    @staticmethod
    def new_login_csrf() -> str:
        return secrets.token_hex(32)


def refuse_csrf() -> APIError:
    return APIError(403, "CSRF token missing or invalid")
