"""Managed nodes and their events: one named function per state transition.

Owns every write to `nodes` and `node_events`. Invariants:

- every state change is compare-and-set (`UPDATE … WHERE name=? AND state=<the state read in the
  same transaction>`), allowed only by `argus.domain.nodes.ALLOWED_FROM`, and appends a
  `node_events` row with its reason in the same transaction;
- a change of what the admin asked for without a change of state (`offline_requested`) is an
  event too (from and to the same state);
- a name is registered once; registering it again is allowed only from `failed` or `offline`
  (`reregister`), which keeps the node's history.

Nodes and events are returned as frozen records (`argus.domain.node_records`: `Node`,
`NodeEvent`), `labels` decoded here once; every write is a named method (`joined`, `failed`,
`draining`, `undrained`, `offline_requested`, `went_offline`, `agent_started`). Times are epoch
seconds passed in by the caller (the clock is never read here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from argus.domain.node_records import Node, NodeEvent
from argus.domain.nodes import ALLOWED_FROM, NodeRegistration, NodeState
from argus.store.db import Database
from argus.store.schema import node_events, nodes


class NodeExists(Exception):
    """The name is registered and its node is neither failed nor offline."""

    def __init__(self, name: str, state: str):
        super().__init__(name)
        self.name = name
        self.state = state


def _node(r: Any) -> Node:
    m = r._mapping
    return Node(
        name=m["name"],
        host=m["host"],
        port=m["port"],
        ssh_user=m["ssh_user"],
        key_ref=m["key_ref"],
        labels=json.loads(m["labels"] or "{}"),
        gpus=m["gpus"],
        cpus=m["cpus"],
        state=NodeState(m["state"]),
        reason=m["reason"],
        agent_pid=m["agent_pid"],
        agent_started_at=m["agent_started_at"],
        ray_node_id=m["ray_node_id"],
        offline_requested=bool(m["offline_requested"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _event_record(r: Any) -> NodeEvent:
    m = r._mapping
    return NodeEvent(m["id"], m["node"], m["at"], m["from_state"], m["to_state"], m["reason"])


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
    def _locked(self, conn: sa.Connection, name: str) -> Node | None:
        q = sa.select(nodes).where(nodes.c.name == name)
        if not self.db.is_sqlite:
            q = q.with_for_update()
        r = conn.execute(q).first()
        return None if r is None else _node(r)

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
        node: Node,
        to: NodeState,
        now: float,
        reason: str | None,
        columns: dict[str, Any],
    ) -> bool:
        current = node.state
        if current not in ALLOWED_FROM[to]:
            return False
        res = conn.execute(
            nodes.update()
            .where(nodes.c.name == node.name, nodes.c.state == current.value)
            .values(state=to.value, reason=reason, updated_at=now, **columns)
        )
        if res.rowcount != 1:
            return False
        self._event(conn, node.name, now, current.value, to.value, reason)
        return True

    # -- create ---------------------------------------------------------------------------
    def create(self, reg: NodeRegistration, now: float, reason: str = "registered") -> Node:
        """Insert a `pending` node and its first event; or, when the name is registered and its
        node is failed or offline, register it again (`pending`, the new fields, its agent and
        Ray fields cleared).

        Returns:
            The node.
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
                raise NodeExists(reg.name, old.state.value)
            created = self._locked(conn, reg.name)
            assert created is not None
            return created

    # -- transitions ----------------------------------------------------------------------
    def _transition(
        self,
        name: str,
        to: NodeState,
        now: float,
        reason: str,
        expect: Iterable[NodeState] | None = None,
        columns: dict[str, Any] | None = None,
    ) -> bool:
        """Move the node to `to` if its current state allows it (and is one of `expect`, when
        given: narrower than the transition table); False otherwise. `columns` are set in the
        same UPDATE."""
        with self.db.write.begin() as conn:
            node = self._locked(conn, name)
            if node is None or (expect is not None and node.state not in set(expect)):
                return False
            return self._move(conn, node, to, now, reason, columns or {})

    def _record(self, name: str, now: float, reason: str, expect: Iterable[NodeState], columns: dict[str, Any]) -> bool:
        """Set columns without a change of state, with an event (`from_state == to_state`);
        False when the node is unknown or not in one of the `expect`ed states."""
        with self.db.write.begin() as conn:
            node = self._locked(conn, name)
            if node is None or node.state not in set(expect):
                return False
            res = conn.execute(
                nodes.update()
                .where(nodes.c.name == name, nodes.c.state == node.state.value)
                .values(updated_at=now, **columns)
            )
            if res.rowcount != 1:
                return False
            self._event(conn, name, now, node.state.value, node.state.value, reason)
            return True

    def agent_started(self, name: str, pid: int | None, now: float, reason: str) -> bool:
        """The agent runs on a pending node: its pid and when, with an event."""
        return self._record(name, now, reason, [NodeState.PENDING], {"agent_pid": pid, "agent_started_at": now})

    def joined(self, name: str, ray_node_id: str | None, now: float, reason: str) -> bool:
        """pending -> online: the node's agent joined Ray as `ray_node_id`."""
        return self._transition(name, NodeState.ONLINE, now, reason, [NodeState.PENDING], {"ray_node_id": ray_node_id})

    def failed(self, name: str, now: float, reason: str) -> bool:
        """pending -> failed (SSH, the host check or the join went wrong: `reason` says which)."""
        return self._transition(name, NodeState.FAILED, now, reason, [NodeState.PENDING])

    def draining(self, name: str, now: float, reason: str, offline_requested: bool = False) -> bool:
        """online -> draining; `offline_requested`: the admin asked for offline while work runs."""
        columns = {"offline_requested": True} if offline_requested else {}
        return self._transition(name, NodeState.DRAINING, now, reason, [NodeState.ONLINE], columns)

    def undrained(self, name: str, now: float, reason: str) -> bool:
        """draining -> online, a requested offline cancelled."""
        return self._transition(name, NodeState.ONLINE, now, reason, [NodeState.DRAINING], {"offline_requested": False})

    def offline_requested(self, name: str, now: float, reason: str) -> bool:
        """A draining node goes offline once it is empty (the reconciler finishes the job)."""
        return self._record(name, now, reason, [NodeState.DRAINING], {"offline_requested": True})

    def went_offline(self, name: str, now: float, reason: str) -> bool:
        """-> offline from any state the transition table allows: the agent stopped (or is held
        out); its pid and a requested offline are cleared."""
        return self._transition(
            name, NodeState.OFFLINE, now, reason, columns={"agent_pid": None, "offline_requested": False}
        )

    # -- reads ----------------------------------------------------------------------------
    def get(self, name: str) -> Node | None:
        with self.db.read.connect() as conn:
            r = conn.execute(sa.select(nodes).where(nodes.c.name == name)).first()
            return None if r is None else _node(r)

    def events(self, name: str) -> list[NodeEvent]:
        """The node's history, oldest first."""
        with self.db.read.connect() as conn:
            rows = conn.execute(sa.select(node_events).where(node_events.c.node == name).order_by(node_events.c.id))
            return [_event_record(r) for r in rows]

    def list(self, states: Iterable[NodeState] | None = None) -> list[Node]:
        """Registered nodes by name (those in `states`, when given)."""
        q = sa.select(nodes).order_by(nodes.c.name)
        if states is not None:
            q = q.where(nodes.c.state.in_([NodeState(s).value for s in states]))
        with self.db.read.connect() as conn:
            return [_node(r) for r in conn.execute(q)]
