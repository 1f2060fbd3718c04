"""Driver logs left behind in old Ray session directories (an attempt lost with its Ray head).

Owns where Argus looks for the log of a job that Ray no longer knows: when a Ray head is
restarted, its job table is gone but each node's `<temp_dir>/session_<date>_<pid>/logs/` stays,
and with it `job-driver-<submission_id>.log`, written by the node that ran the driver. The
temp dirs looked in are those Argus itself starts Ray with (the named cluster's, from its head
record and from `argus.cluster.head.temp_dir_for`; the local cluster's) and Ray's default.

Safe and bounded: only a file named for that exact submission id (checked against a strict
pattern, never used as a glob), only a regular file (never a link), at most MAX_SESSIONS
session directories per temp dir, newest first, and at most MAX_LOG_BYTES of its end.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argus.cluster.procs import DEFAULT_RAY_TEMP_DIR

MAX_SESSIONS = 64
MAX_LOG_BYTES = 16 * 1024 * 1024
_SUBMISSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")


@dataclass(frozen=True)
class FoundLog:
    path: Path
    text: str
    truncated: bool


def ray_temp_dirs(ray_config: Any) -> list[str]:
    """The Ray temp dirs of the cluster a RayConfig names, most specific first, no repeats.

    Args:
        ray_config: an `argus.spec.config.RayConfig` (its `shared_root` and `cluster_name`).
    """
    from argus.cluster import head

    root = ray_config.shared_root
    found: list[str] = []
    for cluster in filter(None, (getattr(ray_config, "cluster_name", None), "local")):
        rec = head.load_record(root, cluster)
        if rec is not None and rec.temp_dir:
            found.append(rec.temp_dir)
        found.append(head.temp_dir_for(root, cluster))
    found.append(DEFAULT_RAY_TEMP_DIR)
    return list(dict.fromkeys(found))


def _sessions(temp_dir: Path) -> list[Path]:
    try:
        entries = [
            e
            for e in os.scandir(temp_dir)
            if e.name.startswith("session_") and e.name != "session_latest" and e.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return []
    entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime, reverse=True)
    return [Path(e.path) for e in entries[:MAX_SESSIONS]]


def find_driver_log(submission_id: str, temp_dirs: Iterable[str | Path]) -> FoundLog | None:
    """The driver log of `submission_id` in an old Ray session directory, if one is left.

    Args:
        submission_id: the Ray submission id (refused unless it is a plain name).
        temp_dirs: Ray temp dirs to look in (`ray_temp_dirs`).

    Returns:
        The newest such file and its text (its last MAX_LOG_BYTES), or None when none is found
        or the id is not a plain name.
    """
    if not _SUBMISSION_ID.fullmatch(submission_id) or len(submission_id) > 200:
        return None
    name = f"job-driver-{submission_id}.log"
    best: tuple[float, Path, int] | None = None
    for temp in temp_dirs:
        for session in _sessions(Path(temp)):
            path = session / "logs" / name
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if os.path.islink(session / "logs"):
                continue  # a link planted in a shared /tmp: never followed
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and (best is None or st.st_mtime > best[0]):
                best = (st.st_mtime, path, st.st_size)
        if best is not None:
            break  # the most specific temp dir that has it
    if best is None:
        return None
    _, path, size = best
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            if size > MAX_LOG_BYTES:
                f.seek(size - MAX_LOG_BYTES)
            data = f.read(MAX_LOG_BYTES)
    except OSError:
        return None
    return FoundLog(path, data.decode(errors="replace"), size > MAX_LOG_BYTES)


def lost_log_text(submission_id: str, lost_at: float | None, found: FoundLog | None) -> str:
    """What `<job_root>/logs/driver.log` holds for an attempt lost with its Ray head: the log
    found in an old session directory with a closing note, else a plain line saying so."""
    when = datetime.fromtimestamp(lost_at, tz=UTC).isoformat(timespec="seconds") if lost_at else "an unknown time"
    if found is None:
        return (
            f"[argus] the driver log of {submission_id} was lost with the Ray head: Ray no "
            f"longer knew the job at {when}, and no old Ray session directory holds its log\n"
        )
    text = found.text
    if text and not text.endswith("\n"):
        text += "\n"
    cut = f" (its last {MAX_LOG_BYTES // (1024 * 1024)} MiB)" if found.truncated else ""
    return (
        text + f"[argus] the Ray head lost this job at {when}; this log{cut} was recovered from "
        f"the old Ray session directory {found.path.parent.parent.name}\n"
    )
