"""Managed nodes and their events: one named function per state transition.

Owns every write to `nodes` and `node_events`. Invariants:

- every state change is compare-and-set (`UPDATE … WHERE name=? AND state=<the state read in the
  same transaction>`), allowed only by `argus.domain.nodes.ALLOWED_FROM`, and appends a
  `node_events` row with its reason in the same transaction;
- a change of what the admin asked for without a change of state (`offline_requested`) is an
  event too (from and to the same state);
- a name is registered once; registering it again is allowed only from `failed` or `offline`
  (`reregister`), which keeps the node's history.

Rows are returned as plain dicts keyed by column name, `labels` decoded. Times are epoch seconds
passed in by the caller (the clock is never read here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from argus.domain.nodes import ALLOWED_FROM, NodeRegistration, NodeState
from argus.store.db import Database
from argus.store.schema import node_events, nodes


class NodeExists(Exception):
    """The name is registered and its node is neither failed nor offline."""

    def __init__(self, name: str, state: str):
        super().__init__(name)
        self.name = name
        self.state = state


def _row(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    row = dict(r._mapping)
    row["labels"] = json.loads(row.get("labels") or "{}")
    return row


def _registration_values(reg: NodeRegistration) -> dict[str, Any]:
    return {
        "host": reg.host,
        "port": reg.port,
        "ssh_user": reg.user,
        "key_ref": reg.key,
        "labels": json.dumps(reg.labels, sort_keys=True),
        "gpus": reg.gpus,
        "cpus": reg.cpus,
    }


class NodeStore:
    """The node registry in one database."""

    def __init__(self, db: Database):
        self.db = db

    # -- helpers --------------------------------------------------------------------------
    def _locked(self, conn: sa.Connection, name: str) -> dict[str, Any] | None:
        q = sa.select(nodes).where(nodes.c.name == name)
        if not self.db.is_sqlite:
            q = q.with_for_update()
        return _row(conn.execute(q).first())

    @staticmethod
    def _event(
        conn: sa.Connection, name: str, now: float, from_state: str | None, to_state: str, reason: str | None
    ) -> None:
        conn.execute(
            node_events.insert().values(node=name, at=now, from_state=from_state, to_state=to_state, reason=reason)
        )

    def _move(
        self,
        conn: sa.Connection,
        node: dict[str, Any],
        to: NodeState,
        now: float,
        reason: str | None,
        fields: dict[str, Any],
    ) -> bool:
        current = NodeState(node["state"])
        if current not in ALLOWED_FROM[to]:
            return False
        res = conn.execute(
            nodes.update()
            .where(nodes.c.name == node["name"], nodes.c.state == current.value)
            .values(state=to.value, reason=reason, updated_at=now, **fields)
        )
        if res.rowcount != 1:
            return False
        self._event(conn, node["name"], now, current.value, to.value, reason)
        return True

    # -- create ---------------------------------------------------------------------------
    def create(self, reg: NodeRegistration, now: float, reason: str = "registered") -> dict[str, Any]:
        """Insert a `pending` node and its first event; or, when the name is registered and its
        node is failed or offline, register it again (`pending`, the new fields, its agent and
        Ray fields cleared).

        Returns:
            The node row.
        Raises:
            NodeExists: the name is registered and its node is pending, online or draining.
        """
        values = _registration_values(reg)
        with self.db.write.begin() as conn:
            old = self._locked(conn, reg.name)
            if old is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            nodes.insert().values(
                                name=reg.name,
                                state=NodeState.PENDING.value,
                                reason=reason,
                                offline_requested=False,
                                created_at=now,
                                updated_at=now,
                                **values,
                            )
                        )
                except sa.exc.IntegrityError:  # registered by a concurrent request meanwhile
                    raise NodeExists(reg.name, NodeState.PENDING.value) from None
                self._event(conn, reg.name, now, None, NodeState.PENDING.value, reason)
            elif not self._move(
                conn,
                old,
                NodeState.PENDING,
                now,
                f"registered again ({reason})",
                {
                    **values,
                    "agent_pid": None,
                    "agent_started_at": None,
                    "ray_node_id": None,
                    "offline_requested": False,
                },
            ):
                raise NodeExists(reg.name, old["state"])
            return self._locked(conn, reg.name)  # type: ignore[return-value]

    # -- transitions ----------------------------------------------------------------------
    def transition(
        self,
        name: str,
        to: NodeState,
        now: float,
        reason: str,
        expect: Iterable[NodeState] | None = None,
        **fields: Any,
    ) -> bool:
        """Move the node to `to` if its current state allows it; False otherwise.

        Args:
            expect: when given, the move happens only from one of these states (narrower than
                the transition table: `offline` of an empty node must not race an undrain).
            fields: other columns to set in the same UPDATE (agent_pid, ray_node_id, …).
        """
        with self.db.write.begin() as conn:
            node = self._locked(conn, name)
            if node is None or (expect is not None and node["state"] not in set(expect)):
                return False
            return self._move(conn, node, to, now, reason, fields)

    def record(self, name: str, now: float, reason: str, expect: Iterable[NodeState], **fields: Any) -> bool:
        """Set columns without a change of state, with an event (`from_state == to_state`).

        Returns:
            False when the node is unknown or not in one of the `expect`ed states.
        """
        with self.db.write.begin() as conn:
            node = self._locked(conn, name)
            if node is None or node["state"] not in set(expect):
                return False
            res = conn.execute(
                nodes.update()
                .where(nodes.c.name == name, nodes.c.state == node["state"])
                .values(updated_at=now, **fields)
            )
            if res.rowcount != 1:
                return False
            self._event(conn, name, now, node["state"], node["state"], reason)
            return True

    def agent_started(self, name: str, pid: int | None, now: float, reason: str) -> bool:
        """The agent runs on a pending node: its pid and when, with an event."""
        return self.record(name, now, reason, [NodeState.PENDING], agent_pid=pid, agent_started_at=now)

    # -- reads ----------------------------------------------------------------------------
    def get(self, name: str) -> dict[str, Any] | None:
        with self.db.read.connect() as conn:
            return _row(conn.execute(sa.select(nodes).where(nodes.c.name == name)).first())

    def list(self, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Registered nodes by name."""
        q = sa.select(nodes).order_by(nodes.c.name)
        if states is not None:
            q = q.where(nodes.c.state.in_(list(states)))
        with self.db.read.connect() as conn:
            return [_row(r) for r in conn.execute(q)]  # type: ignore[misc]

    def events(self, name: str) -> list[dict[str, Any]]:
        with self.db.read.connect() as conn:
            rows = conn.execute(sa.select(node_events).where(node_events.c.node == name).order_by(node_events.c.id))
            return [dict(r._mapping) for r in rows]
