"""Where the Ray head is now: the configured address, or the head's own record on shared storage.

Owns `HeadLocator`. With `RayConfig.cluster_name` unset it always answers `RayConfig.address`
(the dashboard URL) and no GCS address (callers learn it from the dashboard). With it set, it
reads `<shared_root>/ray/discovery/<cluster_name>/head.json` (written by `argus head start`)
and answers the head's dashboard URL and GCS address from it, so a head that restarts on
another host or port is followed without restarting the control plane.

Invariants: the file is read at most once per `max_age_s` (a cached answer is served between);
a missing, unreadable, stale or stopped record raises `ClusterUnavailable` naming the file and
why, so callers treat it like any other unreachable cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from argus.cluster.errors import ClusterUnavailable
from argus.domain.discovery import HeadFileError, HeadInfo, discovery_file, parse_head
from argus.spec.config import RayConfig


@dataclass(frozen=True)
class HeadAddress:
    dashboard_url: str
    gcs_address: str | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


class HeadLocator:
    """Answers the head's current address for one RayConfig."""

    def __init__(
        self,
        config: RayConfig,
        clock: Callable[[], float] = time.time,
        read: Callable[[Path], str | None] = _read,
        max_age_s: float = 1.0,
    ):
        self.config = config
        self.path = Path(str(discovery_file(config.shared_root, config.cluster_name))) if config.cluster_name else None
        self._clock = clock
        self._read = read
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._cached: tuple[float, HeadAddress] | None = None

    @property
    def discovers(self) -> bool:
        """Whether the address comes from head.json (a cluster name is configured)."""
        return self.path is not None

    def current(self) -> HeadAddress:
        """The head's address now.

        Raises:
            ClusterUnavailable: discovery is on and head.json is missing, invalid, stale, or
                says the head stopped.
        """
        path = self.path
        if path is None:
            return HeadAddress(self.config.address, None)
        now = self._clock()
        with self._lock:
            if self._cached is not None and now - self._cached[0] < self._max_age_s:
                return self._cached[1]
        info = self._load(path, now)
        found = HeadAddress(info.dashboard_url.rstrip("/"), info.address)
        with self._lock:
            self._cached = (now, found)
        return found

    def _load(self, path: Path, now: float) -> HeadInfo:
        try:
            text = self._read(path)
        except OSError as exc:
            raise ClusterUnavailable(f"cannot read {path}: {exc}") from None
        if text is None:
            raise ClusterUnavailable(
                f"no head published for cluster {self.config.cluster_name!r}: {path} is missing "
                "(start one with `argus head start`)"
            )
        try:
            info = parse_head(text)
        except HeadFileError as exc:
            raise ClusterUnavailable(f"{path} is not a valid head record: {exc}") from None
        if info.stopped:
            raise ClusterUnavailable(f"the head of cluster {self.config.cluster_name!r} ({info.address}) was stopped")
        if not info.fresh(now):
            raise ClusterUnavailable(
                f"{path} is stale: updated {now - info.updated_at:.0f}s ago, TTL {info.ttl_s:g}s; "
                "the head or its publisher is down"
            )
        return info
