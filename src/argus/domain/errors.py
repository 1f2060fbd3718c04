"""Errors the core raises below the HTTP layer, by what went wrong rather than by status code.

Owns the error kinds that the loops and services raise; `argus.service.errors.install` maps
each kind to one HTTP status in one place (NotFound 404, Conflict 409, Invalid 400,
Unavailable 503, Forbidden 403, TooLarge 413). Messages are written for the user: they name the
thing and the reason, never a secret.
"""

from __future__ import annotations

from collections.abc import Sequence


class DomainError(Exception):
    """Base of the core's errors."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """The named thing does not exist (or is not the caller's to see)."""


class Conflict(DomainError):
    """The thing exists but its state does not allow the action."""


class Invalid(DomainError):
    """The input is wrong; `problems` names each field and its reason."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)


class Forbidden(DomainError):
    """The caller may not do this."""


class Unavailable(DomainError):
    """Something the action needs (Ray, SSH) cannot be reached now; trying later may work."""


class TooLarge(DomainError):
    """The input is over a configured size; the message names the limit, `problems` what is largest."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)
