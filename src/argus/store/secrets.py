"""Users' secrets, encrypted at rest: the `secrets` table.

Owns encrypting and decrypting a secret's value with the server's key (Fernet: AES-128-CBC with
an HMAC-SHA256, the key from the server's environment) and the rows of `secrets`. Invariants: no
column holds a value in plain text; what is encrypted is `[user_id, name, value]`, and a value is
handed out only when the row's own user and name come back out of it, so a ciphertext copied
into another user's row (or under another name) is refused rather than decrypted for them; reads
of names and times need no key; without a key nothing is written or decrypted (`SecretsDisabled`).
No exception raised here quotes a value. Reads hand out `argus.domain.secrets.SecretInfo`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.dialects import postgresql, sqlite

from argus.domain.secrets import SecretInfo
from argus.store.db import Database
from argus.store.schema import secrets

__all__ = ["InvalidSecretsKey", "SecretStore", "SecretUnreadable", "SecretsDisabled"]


class SecretsDisabled(Exception):
    """The server has no key: secrets cannot be stored or read."""

    def __init__(self) -> None:
        super().__init__("secrets are disabled: the server has no secrets key")


class InvalidSecretsKey(ValueError):
    """The key given is not a Fernet key."""


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with the server's key (the key changed), or its
    ciphertext belongs to another user or name. `name` is the secret's name."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(
            f"secret {name} cannot be decrypted with the server's key (was the key changed?); set it again"
        )


def _fernet(key: str | None) -> Fernet | None:
    if not key:
        return None
    try:
        return Fernet(key.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise InvalidSecretsKey(
            "the secrets key is not a Fernet key (32 url-safe base64-encoded bytes; "
            "`python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` makes one)"
        ) from None


def _info(r: sa.Row) -> SecretInfo:
    return SecretInfo(name=r.name, created_at=r.created_at, updated_at=r.updated_at)


class SecretStore:
    """The `secrets` table, with values encrypted under `key`.

    Args:
        db: the database.
        key: a Fernet key (url-safe base64 of 32 bytes); None or empty: secrets are disabled
            (names can still be listed and deleted).
    Raises:
        InvalidSecretsKey: `key` is given but is not a Fernet key.
    """

    def __init__(self, db: Database, key: str | None):
        self.db = db
        self._fernet = _fernet(key)

    @property
    def enabled(self) -> bool:
        """Whether the store has a key (can store and decrypt values)."""
        return self._fernet is not None

    def _key(self) -> Fernet:
        if self._fernet is None:
            raise SecretsDisabled()
        return self._fernet

    def _encrypt(self, user_id: str, name: str, value: str) -> str:
        plain = json.dumps([user_id, name, value], ensure_ascii=False).encode("utf-8")
        return self._key().encrypt(plain).decode("ascii")

    def _decrypt(self, user_id: str, name: str, ciphertext: str) -> str:
        try:
            owner, stored_name, value = json.loads(self._key().decrypt(ciphertext.encode("ascii")))
        except (InvalidToken, ValueError, TypeError, UnicodeError):
            raise SecretUnreadable(name) from None
        if owner != user_id or stored_name != name or not isinstance(value, str):
            raise SecretUnreadable(name)
        return value

    def _insert_new(self, row: dict[str, object]) -> sa.Insert:
        """INSERT `row` unless the (user, name) is taken, returning the name when inserted."""
        insert = sqlite.insert(secrets) if self.db.is_sqlite else postgresql.insert(secrets)
        return insert.values(**row).on_conflict_do_nothing().returning(secrets.c.name)

    def put(self, user_id: str, name: str, value: str, now: float) -> bool:
        """Store `value` as the user's secret `name`, replacing an older value.

        Args:
            user_id, name: already checked.
            value: the plain value (already checked); only its ciphertext is stored.
            now: `updated_at`, and `created_at` of a new secret.
        Returns:
            True when the secret is new, False when it replaced one.
        Raises:
            SecretsDisabled: the store has no key.
        """
        ciphertext = self._encrypt(user_id, name, value)
        where = (secrets.c.user_id == user_id, secrets.c.name == name)
        replace = secrets.update().where(*where).values(ciphertext=ciphertext, updated_at=now)
        with self.db.write.begin() as conn:
            if conn.execute(replace).rowcount == 1:
                return False
            row = {"user_id": user_id, "name": name, "ciphertext": ciphertext, "created_at": now, "updated_at": now}
            if conn.execute(self._insert_new(row)).first() is not None:
                return True
            conn.execute(replace)  # another first write of the same name came in between
            return False

    def info(self, user_id: str, name: str) -> SecretInfo | None:
        """The user's secret `name` (name and times), or None."""
        q = sa.select(secrets.c.name, secrets.c.created_at, secrets.c.updated_at).where(
            secrets.c.user_id == user_id, secrets.c.name == name
        )
        with self.db.read.connect() as conn:
            r = conn.execute(q).first()
            return None if r is None else _info(r)

    def names(self, user_id: str) -> list[SecretInfo]:
        """The user's secrets, by name: names and times, never values."""
        q = (
            sa.select(secrets.c.name, secrets.c.created_at, secrets.c.updated_at)
            .where(secrets.c.user_id == user_id)
            .order_by(secrets.c.name)
        )
        with self.db.read.connect() as conn:
            return [_info(r) for r in conn.execute(q)]

    def delete(self, user_id: str, name: str) -> bool:
        """Delete the user's secret `name`; False when there was none."""
        with self.db.write.begin() as conn:
            res = conn.execute(secrets.delete().where(secrets.c.user_id == user_id, secrets.c.name == name))
            return res.rowcount == 1

    def missing(self, user_id: str, names: Iterable[str]) -> list[str]:
        """Which of `names` the user has no secret for, in the order given, each once."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return []
        q = sa.select(secrets.c.name).where(secrets.c.user_id == user_id, secrets.c.name.in_(wanted))
        with self.db.read.connect() as conn:
            found = set(conn.execute(q).scalars())
        return [n for n in wanted if n not in found]

    def values(self, user_id: str, names: Iterable[str]) -> dict[str, str]:
        """The user's secrets `names`, decrypted: `{name: value}` in the order given.

        Raises:
            SecretsDisabled: the store has no key.
            KeyError: the user has no secret of the first missing name (the error's argument).
            SecretUnreadable: a secret cannot be decrypted with this key, or is not the row's own.
        """
        wanted = list(dict.fromkeys(names))
        self._key()
        if not wanted:
            return {}
        q = sa.select(secrets.c.name, secrets.c.ciphertext).where(
            secrets.c.user_id == user_id, secrets.c.name.in_(wanted)
        )
        with self.db.read.connect() as conn:
            stored = {r.name: r.ciphertext for r in conn.execute(q)}
        out: dict[str, str] = {}
        for name in wanted:
            if name not in stored:
                raise KeyError(name)
            out[name] = self._decrypt(user_id, name, stored[name])
        return out
