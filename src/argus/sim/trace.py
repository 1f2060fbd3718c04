"""Loading a cluster trace for the simulator: one `TraceJob` per CSV row, checked.

Owns the trace format: a CSV with a header naming at least `job_id`, `submission_time`
(seconds), `duration` (run time in seconds) and `num_gpu` (gang size), and optionally `user`.
Traces without a `user` column (the ITP traces have none) get K synthetic users, a stable hash
of the job id modulo K, so that the same job always belongs to the same user. Every problem is
reported as a `TraceError` naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import _csv

REQUIRED_COLUMNS = ("job_id", "submission_time", "duration", "num_gpu")
DEFAULT_USERS = 16


class TraceError(ValueError):
    """Bad simulator input: a missing or malformed trace, or a bad option value."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace: when it was submitted, how long it runs and how many GPUs it takes."""

    id: str
    submitted_at: float
    duration_s: float
    num_gpu: int
    user: str


@dataclass(frozen=True)
class Trace:
    """A loaded trace: its jobs in submission order, and where their users came from."""

    path: Path
    jobs: list[TraceJob]
    synthetic_users: int | None  # K when users are hashed from job ids; None: the user column


def synthetic_user(job_id: str, users: int) -> str:
    """The synthetic user of a job: a stable hash (CRC-32) of its id, modulo `users`.

    Args:
        job_id: the job's id as written in the trace.
        users: how many synthetic users there are (at least 1).

    Returns:
        A name `u00`, `u01`, ... that depends only on `job_id` and `users`.
    """
    width = max(2, len(str(users - 1)))
    return f"u{zlib.crc32(job_id.encode()) % users:0{width}d}"


def _number(text: str, where: str, column: str, minimum: float, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}, column {column}: {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise TraceError(f"{where}, column {column}: {text!r} is not a finite number")
    if value < minimum or (strict and value == minimum):
        bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
        raise TraceError(f"{where}, column {column}: {text!r} must be {bound}")
    return value


def _gpus(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TraceError(f"{where}, column num_gpu: {text!r} is not a whole number") from None
    if value < 1:
        raise TraceError(f"{where}, column num_gpu: {text!r} must be at least 1")
    return value


def load_trace(path: str | Path, users: int = DEFAULT_USERS, limit: int | None = None) -> Trace:
    """Read a trace CSV, in submission order (rows with equal times keep the file's order).

    Args:
        path: the CSV file.
        users: how many synthetic users to derive from the job ids when there is no `user`
            column (ignored when there is one).
        limit: read at most this many data rows (None: all).

    Returns:
        The trace: its jobs sorted by submission time, and whether the users are synthetic.

    Raises:
        TraceError: the file is missing or unreadable, a column is missing, a job id repeats,
            or a value is empty or malformed (the message names the line and the column).
    """
    path = Path(path)
    if users < 1:
        raise TraceError(f"--users must be at least 1, not {users}")
    handle = _open_trace(path)
    with handle:
        reader = csv.reader(handle)
        names = _read_header(reader, path)
        col = {c: names.index(c) for c in (*REQUIRED_COLUMNS, "user") if c in names}
        jobs = _read_jobs(reader, path, names, col, users, limit)
    jobs.sort(key=lambda j: j.submitted_at)
    return Trace(path, jobs, None if "user" in col else users)


def _open_trace(path: Path) -> TextIO:
    """The trace file opened for reading as CSV text (TraceError when it cannot be)."""
    try:
        return path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_header(reader: _csv.Reader, path: Path) -> list[str]:
    """The header's column names, stripped (TraceError when a required one is missing)."""
    try:
        header = next(reader)
    except StopIteration:
        raise TraceError(f"{path}: empty file; the header line must name {', '.join(REQUIRED_COLUMNS)}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}, line 1: not a CSV header ({exc})") from None
    names = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise TraceError(
            f"{path}, line 1: missing column(s) {', '.join(missing)} (the header has {', '.join(names) or 'nothing'})"
        )
    return names


def _read_jobs(
    reader: _csv.Reader, path: Path, names: list[str], col: dict[str, int], users: int, limit: int | None
) -> list[TraceJob]:
    """The data rows as jobs, in file order: blank rows skipped, at most `limit`."""
    jobs: list[TraceJob] = []
    seen: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if limit is not None and len(jobs) >= limit:
                break
            jobs.append(_job(row, f"{path}, line {line}", line, names, col, seen, users))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None
    return jobs


def _job(
    row: list[str], where: str, line: int, names: list[str], col: dict[str, int], seen: dict[str, int], users: int
) -> TraceJob:
    """One data row as a job, checked; records its id in `seen` (TraceError when a repeat)."""
    if len(row) < len(names):
        absent = [c for c, i in col.items() if i >= len(row)]
        raise TraceError(
            f"{where}: {len(row)} field(s), the header has {len(names)}"
            + (f" (no {', '.join(absent)})" if absent else "")
        )
    cells = {c: row[i].strip() for c, i in col.items()}
    for c, text in cells.items():
        if not text:
            raise TraceError(f"{where}, column {c}: empty")
    job_id = cells["job_id"]
    if job_id in seen:
        raise TraceError(f"{where}, column job_id: {job_id!r} repeats line {seen[job_id]}")
    seen[job_id] = line
    return TraceJob(
        id=job_id,
        submitted_at=_number(cells["submission_time"], where, "submission_time", 0.0, False),
        duration_s=_number(cells["duration"], where, "duration", 0.0, False),
        num_gpu=_gpus(cells["num_gpu"], where),
        user=cells["user"] if "user" in cells else synthetic_user(job_id, users),
    )
