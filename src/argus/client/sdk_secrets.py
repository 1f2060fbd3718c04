"""The secrets methods of the Argus SDK: `SecretsMixin`, which `argus.client.sdk.ArgusClient` inherits.

Owns the `/api/v2/secrets` conversation: setting one of the caller's secrets, listing them (names
and times: the service never answers a value) and deleting one, and `secret_path`, the quoting of
a secret's name as one path segment. The HTTP plumbing (`_json`) is
`argus.client.sdk_http.ApiSession`'s. Invariant: a value goes out in the body of one `PUT` and is
kept nowhere here.
"""

from __future__ import annotations

from urllib.parse import quote

from argus.client.sdk_http import ApiSession


def secret_path(name: str) -> str:
    """The path of one secret's route, the name quoted as a single path segment.

    Raises:
        ValueError: the name is empty.
    """
    if not name:
        raise ValueError("secret name must not be empty")
    segment = quote(name, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/api/v2/secrets/{segment}"


class SecretsMixin(ApiSession):
    """`ArgusClient`'s secrets methods, over the session's `_json`."""

    def set_secret(self, name: str, value: str) -> dict:
        """Set the caller's secret `name` (new, or its value replaced); the value is stored
        encrypted and never shown again.

        Returns:
            `{"name", "created_at", "updated_at"}`.
        Raises:
            ArgusAPIError: 400 a bad name or value (the field and the reason, never the value),
                503 the server has no secrets key.
        """
        return self._json("PUT", secret_path(name), json={"value": value})

    def secrets(self) -> dict:
        """`{"secrets": [{"name", "created_at", "updated_at"}, ...]}`: the caller's, by name."""
        return self._json("GET", "/api/v2/secrets")

    def delete_secret(self, name: str) -> dict:
        """Delete the caller's secret `name`.

        Returns:
            `{"name", "deleted": true}`.
        Raises:
            ArgusAPIError: 404 no such secret of the caller's.
        """
        return self._json("DELETE", secret_path(name))
