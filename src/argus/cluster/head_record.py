"""The files of a cluster's head on shared storage: its record and the head.json it publishes.

Owns, per (shared_root, cluster name) under `<shared_root>/ray/discovery/<cluster>/`:
- `head-state.json`: the `HeadRecord` of the head that `argus.cluster.head.start` started (pids,
  ports, temp dir, the host they run on), which `stop`, `status` and the publisher read;
- `head.json`: the `HeadInfo` the publisher rewrites;
- `logs/`: the head's and the publisher's logs;
and the names those live under: the cluster name's syntax and the head's temp dir, which
depends only on (shared_root, cluster). Both files are written atomically (a temp file in the
same directory, fsync, rename): readers see the old content or the new, never a mix.
No processes are started or stopped here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from argus.domain.discovery import HeadFileError, HeadInfo, discovery_dir, discovery_file, parse_head

STATE_NAME = "head-state.json"
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass
class HeadRecord:
    """What `start` started: enough for `stop` and `status`, and for the publisher."""

    shared_root: str
    cluster: str
    head_ip: str
    gcs_port: int
    dashboard_port: int
    temp_dir: str
    ttl_s: float
    refresh_s: float
    ports: dict[str, int] = field(default_factory=dict)
    min_worker_port: int = 0
    max_worker_port: int = 0
    head_pid: int | None = None
    publisher_pid: int | None = None
    started_at: float | None = None
    host: str = ""  # the machine the head and its publisher run on (their pids are its)

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.head_ip}:{self.dashboard_port}"

    def info(self, now: float, stopped: bool = False) -> HeadInfo:
        """The head.json content at `now`."""
        return HeadInfo(
            cluster_name=self.cluster,
            head_ip=self.head_ip,
            gcs_port=self.gcs_port,
            dashboard_url=self.dashboard_url,
            updated_at=now,
            ttl_s=self.ttl_s,
            stopped=stopped,
            temp_dir=self.temp_dir,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HeadRecord:
        return cls(**json.loads(text))


# -- paths -------------------------------------------------------------------------------
def check_cluster_name(cluster: str) -> None:
    """Raises: ValueError unless `cluster` is 1-63 letters, digits, `.`, `_`, `-`."""
    if not _CLUSTER_NAME.fullmatch(cluster or ""):
        raise ValueError(f"cluster name {cluster!r}: use 1-63 letters, digits, '.', '_' or '-'")


def state_file(shared_root: str | Path, cluster: str) -> Path:
    return Path(discovery_dir(str(shared_root), cluster)) / STATE_NAME


def log_dir(shared_root: str | Path, cluster: str) -> Path:
    return Path(discovery_dir(str(shared_root), cluster)) / "logs"


def temp_dir_for(shared_root: str | Path, cluster: str) -> str:
    """Short (unix socket paths are limited to 107 bytes), one per (shared_root, cluster)."""
    digest = hashlib.sha1(f"{Path(shared_root).resolve()}:{cluster}".encode()).hexdigest()[:8]
    return f"/tmp/argus-ray-{digest}"


# -- reading and writing -----------------------------------------------------------------
def load_record(shared_root: str | Path, cluster: str) -> HeadRecord | None:
    try:
        return HeadRecord.from_json(state_file(shared_root, cluster).read_text())
    except (OSError, ValueError, TypeError):
        return None


def save_record(rec: HeadRecord) -> None:
    """Write `rec` as its cluster's `head-state.json`, atomically."""
    _atomic_write(state_file(rec.shared_root, rec.cluster), rec.to_json())


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_head(shared_root: str, cluster: str, info: HeadInfo) -> Path:
    """Publish `info` as head.json, atomically (readers see the old file or the new one)."""
    path = Path(discovery_file(shared_root, cluster))
    _atomic_write(path, info.to_json())
    return path


def read_head(shared_root: str, cluster: str) -> tuple[HeadInfo | None, str | None]:
    """(head.json parsed, None) or (None, why not)."""
    path = Path(discovery_file(shared_root, cluster))
    try:
        return parse_head(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except OSError as exc:
        return None, f"cannot read {path}: {exc}"
    except HeadFileError as exc:
        return None, f"{path}: {exc}"
