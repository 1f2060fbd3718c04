"""Users (seed 004): the record the store hands out, their two states, and the id rules.

A user is `ACTIVE` or `DISABLED`; only an active user's tokens resolve and only an active user is
issued one. `admin` is the admin's own name, reserved: no user may be created with it. Pure:
the caller passes the times in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from argus.domain.task import check_user_id

ADMIN = "admin"


class UserState(StrEnum):
    ACTIVE = "ACTIVE"
    DISABLED = "DISABLED"


@dataclass(frozen=True)
class User:
    """One row of `users`: `created_at` and `disabled_at` are epoch seconds."""

    user_id: str
    state: UserState
    created_at: float
    disabled_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state is UserState.ACTIVE


def new_user_id_problem(user_id: object) -> str | None:
    """Why `user_id` (any JSON value) cannot name a new user, else None: the id rules of
    `check_user_id`, and `admin` is reserved."""
    try:
        check_user_id(user_id)  # type: ignore[arg-type]  # it refuses a value that is not a string too
    except ValueError as exc:
        return str(exc)
    return f"'{ADMIN}' is reserved" if user_id == ADMIN else None
