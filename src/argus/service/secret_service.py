"""What the secrets routes do (issue 12): set, list and delete the caller's own secrets.

Owns the secrets' API bodies (`secret_view`: a name and ISO times, never a value), the name
check of a secret (the domain's name rule, then the TaskSpec's job environment rule, since each
secret becomes an environment variable of its jobs: `LD_PRELOAD`, `RAY_*`, `PYTHONPATH`,
`ARGUS_*`, ... are refused with the reason) and the times recorded, from the injected clock.
Invariants: every call acts on the caller's own secrets (`who.user_id`), the admin's included:
nobody reads, lists or deletes another user's; no answer or error carries a value; a server
without a key answers 503 to a write and lists names only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from argus.domain.errors import Invalid, NotFound, Unavailable
from argus.domain.secrets import SecretInfo, secret_name_problem
from argus.service.auth import Identity
from argus.service.views import iso
from argus.spec.job_env import check_env_name
from argus.store.secrets import SecretsDisabled, SecretStore

DISABLED = "secrets are disabled: the server has no {env}"


def secret_view(info: SecretInfo) -> dict[str, Any]:
    """A secret's API body: `{name, created_at, updated_at}` (docs/api.md, Secrets)."""
    return {"name": info.name, "created_at": iso(info.created_at), "updated_at": iso(info.updated_at)}


def secret_name_reason(name: str) -> str | None:
    """Why `name` cannot name a secret (the name rule, then the job environment's), else None."""
    if why := secret_name_problem(name):
        return why
    try:
        check_env_name(name)
    except ValueError as exc:
        return f"a secret becomes an environment variable of the job: {exc}"
    return None


def check_secret_name(name: str) -> str:
    """`name`, when it may name a secret.

    Raises:
        Invalid: naming `name` and the reason.
    """
    if why := secret_name_reason(name):
        raise Invalid(f"invalid secret name {name!r}", [("name", why)])
    return name


class SecretService:
    """The caller's secrets over `SecretStore`, timed by `clock`.

    Args:
        key_env: the environment variable the server's key comes from (named in the 503).
    """

    def __init__(self, store: SecretStore, clock: Callable[[], float], key_env: str = "ARGUS_SECRETS_KEY"):
        self.store = store
        self.clock = clock
        self.key_env = key_env

    def set(self, who: Identity, name: str, value: str) -> tuple[dict[str, Any], bool]:
        """Store the caller's secret `name` (new, or replacing its value).

        Returns:
            The secret's body and whether it is new.
        Raises:
            Invalid: a bad name. Unavailable: the server has no key.
        """
        check_secret_name(name)
        try:
            created = self.store.put(who.user_id, name, value, self.clock())
        except SecretsDisabled:
            raise Unavailable(DISABLED.format(env=self.key_env)) from None
        info = self.store.info(who.user_id, name)
        if info is None:  # deleted by a concurrent request in between
            raise NotFound(f"no secret {name}")
        return secret_view(info), created

    def list(self, who: Identity) -> dict[str, Any]:
        """The caller's secrets, by name (names and times only)."""
        return {"secrets": [secret_view(s) for s in self.store.names(who.user_id)]}

    def delete(self, who: Identity, name: str) -> dict[str, Any]:
        """Delete the caller's secret `name`.

        Raises:
            Invalid: a bad name. NotFound: the caller has no such secret.
        """
        check_secret_name(name)
        if not self.store.delete(who.user_id, name):
            raise NotFound(f"no secret {name}")
        return {"name": name, "deleted": True}
