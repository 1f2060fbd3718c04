"""The node methods of the Argus SDK: `NodesMixin`, which `argus.client.sdk.ArgusClient` inherits.

Owns the `/api/v2/nodes` conversation: listing nodes, reading one, and the admin's add, drain,
undrain and offline, plus polling a node into a wanted state (`wait_node`), and `node_path`,
the quoting of a node id as one path segment. The HTTP plumbing (`_json`, `_sleep`, `_clock`)
is `argus.client.sdk_http.ApiSession`'s, which this class extends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from argus.client.sdk_http import ApiSession


def node_path(node_id: str, suffix: str = "") -> str:
    """The path of one node's route, the id quoted as a single path segment.

    Raises:
        ValueError: the node id is empty.
    """
    if not node_id:
        raise ValueError("node id must not be empty")
    segment = quote(node_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/api/v2/nodes/{segment}{suffix}"


class NodesMixin(ApiSession):
    """`ArgusClient`'s node methods, over the session's `_json`, `_sleep` and `_clock`."""

    def nodes(self) -> dict:
        """`{"nodes": [...], "pools": [...], "ray_error"}`: registered nodes joined with Ray's
        live view, then Ray workers that joined by themselves (`managed: false`)."""
        return self._json("GET", "/api/v2/nodes")

    def node(self, node_id: str) -> dict:
        """One node (a registered name, an `argus.io/node` label or a Ray node id) with its events."""
        return self._json("GET", node_path(node_id))

    def add_node(
        self,
        name: str,
        host: str,
        user: str,
        key: str,
        port: int = 22,
        gpus: int | None = None,
        cpus: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict:
        """Admin: register a node; Argus starts its agent over SSH in the background.

        Args:
            key: the name of a private key file in the server's key directory.
            gpus, cpus: None lets Ray detect them on the node.
        Returns:
            The node, `pending`.
        Raises:
            ArgusAPIError: 400 naming the field, 403 not the admin, 409 the name is taken.
        """
        body: dict[str, Any] = {"name": name, "host": host, "user": user, "key": key, "port": port}
        if gpus is not None:
            body["gpus"] = gpus
        if cpus is not None:
            body["cpus"] = cpus
        if labels:
            body["labels"] = dict(labels)
        return self._json("POST", "/api/v2/nodes", json=body)

    def drain_node(self, node_id: str, reason: str | None = None) -> dict:
        """Admin: place nothing new on the node; what runs there finishes.

        Raises:
            ArgusAPIError: 409 when the node is not online (the message names its state).
        """
        return self._json("POST", node_path(node_id, ":drain"), json={"reason": reason} if reason else None)

    def undrain_node(self, node_id: str) -> dict:
        """Admin: take a draining node back."""
        return self._json("POST", node_path(node_id, ":undrain"))

    def offline_node(self, node_id: str, reason: str | None = None) -> dict:
        """Admin: stop the node's agent once it runs nothing (it is drained first when busy).

        Returns:
            The node: `offline`, or `draining` with `offline_requested: true`.
        """
        return self._json("POST", node_path(node_id, ":offline"), json={"reason": reason} if reason else None)

    def wait_node(self, node_id: str, states: set[str] | frozenset[str], timeout_s: float, poll_s: float = 0.5) -> dict:
        """Poll a node until its state is one of `states`.

        Raises:
            TimeoutError: not there after `timeout_s` seconds (the message has its state and reason).
        """
        deadline = self._clock() + timeout_s
        while True:
            node = self.node(node_id)
            if node.get("state") in states:
                return node
            if self._clock() >= deadline:
                raise TimeoutError(
                    f"node {node_id} is still {node.get('state')} after {timeout_s:g}s ({node.get('reason')})"
                )
            self._sleep(max(0.0, min(poll_s, deadline - self._clock())))
