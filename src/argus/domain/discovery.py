"""Head discovery on shared storage, and what a worker's node agent should do about it (pure).

The head publishes `<shared_root>/ray/discovery/<cluster_name>/head.json` (seed 004 §M4):
its address, GCS port, dashboard URL, cluster name, `updated_at`, `ttl_s` and its Ray temp dir,
refreshed well within the TTL, and `stopped: true` when it stops cleanly. A node agent never
needs a head address of its own: it reads the file and `decide`s, from the file, the time and
what it sees locally, whether to join, leave, re-join or wait.

The control plane holds a node by writing `<shared_root>/ray/discovery/<cluster>/hold/<name>`
(its text is the reason) when an admin drains it: Ray's drain shuts the raylet down once it is
idle, and the hold keeps the agent from joining again. A held node never joins.

No clock, no files, no processes here: the caller passes them in, so every decision is
unit-tested.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

FILE_NAME = "head.json"
HOLD_DIR = "hold"


def discovery_dir(shared_root: str, cluster: str) -> PurePosixPath:
    """`<shared_root>/ray/discovery/<cluster>`: head.json, the head's records, the holds."""
    return PurePosixPath(shared_root) / "ray" / "discovery" / cluster


def discovery_file(shared_root: str, cluster: str) -> PurePosixPath:
    """`<shared_root>/ray/discovery/<cluster>/head.json`."""
    return discovery_dir(shared_root, cluster) / FILE_NAME


def hold_file(shared_root: str, cluster: str, name: str) -> PurePosixPath:
    """`<shared_root>/ray/discovery/<cluster>/hold/<name>`: while it exists, node `name` stays out.

    Raises:
        ValueError: `name` is empty or not a single path component.
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"node name {name!r} is not a plain file name")
    return discovery_dir(shared_root, cluster) / HOLD_DIR / name


@dataclass(frozen=True)
class HeadInfo:
    cluster_name: str
    head_ip: str
    gcs_port: int
    dashboard_url: str
    updated_at: float
    ttl_s: float
    stopped: bool = False
    temp_dir: str | None = None  # the head's Ray temp dir: nodes on the head's host must share it

    @property
    def address(self) -> str:
        """What `ray start --address` takes."""
        return f"{self.head_ip}:{self.gcs_port}"

    def fresh(self, now: float) -> bool:
        """Published recently enough to trust, and not marked stopped."""
        return not self.stopped and now - self.updated_at <= self.ttl_s

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


class HeadFileError(ValueError):
    """head.json exists but is not a valid head record."""


def parse_head(text: str) -> HeadInfo:
    """Raises: HeadFileError, naming what is wrong."""
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise HeadFileError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HeadFileError("not a JSON object")
    try:
        info = HeadInfo(
            cluster_name=str(data["cluster_name"]),
            head_ip=str(data["head_ip"]),
            gcs_port=int(data["gcs_port"]),
            dashboard_url=str(data["dashboard_url"]),
            updated_at=float(data["updated_at"]),
            ttl_s=float(data["ttl_s"]),
            stopped=bool(data.get("stopped", False)),
            temp_dir=None if data.get("temp_dir") in (None, "") else str(data["temp_dir"]),
        )
    except KeyError as exc:
        raise HeadFileError(f"missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise HeadFileError(f"bad value: {exc}") from None
    if not 0 < info.gcs_port < 65536 or info.ttl_s <= 0 or not info.head_ip:
        raise HeadFileError("gcs_port, ttl_s or head_ip out of range")
    return info


class Action(StrEnum):
    WAIT = "wait"  # nothing to join yet (or already where it should be)
    JOIN = "join"  # `ray start --address <head>`
    REJOIN = "rejoin"  # leave the old head, join the new one
    LEAVE = "leave"  # stop the local raylet and wait for a head


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    address: str | None = None


def decide(
    now: float,
    head: HeadInfo | None,
    file_problem: str | None,
    joined_to: str | None,
    raylet_alive: bool,
    *,
    held: str | None = None,
) -> Decision:
    """What the node agent does next.

    Args:
        now: the agent's clock.
        head: the parsed head.json, or None when it is missing or invalid.
        file_problem: why `head` is None (missing file, bad JSON), for the log.
        joined_to: the head address this node's raylet was started against, or None.
        raylet_alive: whether that raylet still runs.
        held: the text of this node's hold file when it exists (the reason), else None.
            A held node never joins; a joined one keeps its raylet while Ray drains it.

    Returns:
        The action, why (for the log), and the head address for JOIN / REJOIN.
    """
    if held is not None:
        reason = held.strip() or "no reason given"
        if joined_to is not None and raylet_alive:
            return Decision(Action.WAIT, f"held: {reason}; keeping the raylet while Ray drains it")
        return Decision(Action.WAIT, f"held: {reason}; not joining")
    usable = head is not None and head.fresh(now)
    if not usable:
        if head is None:
            why = f"no usable head.json ({file_problem or 'missing'})"
        elif head.stopped:
            why = f"the head {head.address} stopped"
        else:
            why = f"head.json is stale ({now - head.updated_at:.0f}s old, TTL {head.ttl_s:g}s)"
        if joined_to is not None and raylet_alive:
            return Decision(Action.LEAVE, why)
        return Decision(Action.WAIT, why)
    assert head is not None
    if joined_to is None:
        return Decision(Action.JOIN, f"head {head.address} published", head.address)
    if joined_to != head.address:
        return Decision(Action.REJOIN, f"the head moved from {joined_to} to {head.address}", head.address)
    if not raylet_alive:
        return Decision(Action.REJOIN, "the local raylet died", head.address)
    return Decision(Action.WAIT, f"joined to {head.address}")
