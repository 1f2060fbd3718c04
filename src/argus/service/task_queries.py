"""What the task routes read: a task, the task list, attempts, events, checkpoints, the queue
and the driver logs.

Owns `TaskQueries`, the read half of `argus.service.task_service.TaskService` (which adds
acceptance, cancel and priority), and the visibility rule: a task that is not the caller's is
reported as not found, the same answer as for a task that does not exist. Reads take the
store's records (`argus.domain.records`) to API bodies (`views`); filters run in the store's
query, never over a page in Python.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, get_args

from argus.cluster.errors import ClusterError, JobNotFound
from argus.cluster.jobs import tail_lines
from argus.domain.errors import Forbidden, Invalid, NotFound, Unavailable
from argus.domain.paths import checkpoints_dir
from argus.domain.records import Attempt, Task
from argus.domain.task import ACTIVE_STATES, FINAL_STATES, WAITING_STATES, TaskState, check_user_id, parse_task_id
from argus.ports import Clock, JobTool
from argus.service.auth import Identity
from argus.service.views import attempt_view, iso, pending_reason, task_detail, task_summary
from argus.settings import ArgusSettings
from argus.spec.taskspec import Workload
from argus.store.ledger import LedgerStore
from argus.store.tasks import TaskStore

SMALL_INT = re.compile(r"[0-9]{1,9}")
WORKLOADS: tuple[str, ...] = get_args(Workload)
_STEP_DIR = re.compile(r"global_step_([0-9]{1,12})")
# Ray's statuses of a job that will write no more to its driver log.
_RAY_ENDED = frozenset({"SUCCEEDED", "FAILED", "STOPPED", "LOST"})


class TaskQueries:
    """The reads of `TaskService`; the attributes are set by its constructor."""

    settings: ArgusSettings
    store: TaskStore
    jobs: JobTool
    clock: Clock
    pool_capacity: Callable[[], dict[str, dict[str, float]]] | None

    @staticmethod
    def _visible(who: Identity, task_id: str, task: Task | None) -> Task:
        if task is None or not who.owns(task.user_id):
            raise NotFound(f"no task {task_id}")
        return task

    def _own(self, who: Identity, task_id: str) -> Task:
        """The caller's task (the admin's: anyone's).

        Raises:
            NotFound: no such task, or not the caller's.
        """
        return self._visible(who, task_id, self.store.get(task_id) if parse_task_id(task_id) else None)

    def get(self, who: Identity, task_id: str) -> dict[str, Any]:
        """The task's detail: its latest attempt and its TaskSpec text (secrets redacted).

        Raises:
            NotFound: no such task, or not the caller's.
        """
        found = self.store.get_with_spec(task_id) if parse_task_id(task_id) else None  # never a lookup of junk
        task, text = found if found is not None else (None, "")
        task = self._visible(who, task_id, task)
        latest = self.store.latest_attempts([task_id]).get(task_id)
        return task_detail(task, latest, text, LedgerStore(self.store.db).task_figures(task_id, self.clock()))

    def list(
        self,
        who: Identity,
        states: list[str],
        limit: int,
        cursor: str | None,
        workload: str | None = None,
        user: str | None = None,
        with_times: bool = False,
    ) -> dict[str, Any]:
        """The caller's tasks (the admin's: everyone's, or `user`'s), newest first, a page at a
        time, in `states` and of `workload` when given.

        Args:
            with_times: add each task's `waited_s` and `ran_s` (one grouped read for the page).
        Raises:
            Invalid: an unknown state or workload, a bad user id, or a cursor that is not a
                `next_cursor` value.
            Forbidden: a user asking for another user's tasks.
        """
        bad = [s for s in states if s not in TaskState.__members__]
        if bad:
            raise Invalid("unknown state", [("state", f"'{bad[0]}' is not one of {', '.join(TaskState.__members__)}")])
        if workload is not None and workload not in WORKLOADS:
            raise Invalid("unknown workload", [("workload", f"'{workload}' is not one of {', '.join(WORKLOADS)}")])
        if user is not None:
            try:
                check_user_id(user)
            except ValueError as exc:
                raise Invalid("invalid user", [("user", str(exc))]) from None
            if not who.owns(user):
                raise Forbidden("only the admin may list another user's tasks")
        before = None
        if cursor:
            if not SMALL_INT.fullmatch(cursor):
                raise Invalid("invalid cursor", [("cursor", "must be a next_cursor value")])
            before = int(cursor)
        whose = user if who.is_admin else who.user_id
        rows = self.store.list(whose, states or None, limit + 1, before, workload)
        more = len(rows) > limit
        rows = rows[:limit]
        summaries = [task_summary(r) for r in rows]
        if with_times:
            for summary, (waited, ran) in zip(summaries, self._times(rows), strict=True):
                summary["waited_s"], summary["ran_s"] = waited, ran
        return {"tasks": summaries, "next_cursor": str(rows[-1].seq) if more and rows else None}

    def _times(self, rows: builtins.list[Task]) -> builtins.list[tuple[float | None, float | None]]:
        """Each task's wait and run time as its own page counts them, from the GPU-hour ledger in
        one read: the wait from acceptance to its first allocation (still waiting: to now), the
        run time the sum of its attempts' allocated time (the running one up to now)."""
        now = self.clock()
        figures = LedgerStore(self.store.db).figures_of([t.task_id for t in rows], now)
        out: builtins.list[tuple[float | None, float | None]] = []
        for t in rows:
            f = figures.get(t.task_id)
            if f is None:  # never allocated: waiting still (to now), or ended before it ran
                out.append((None if t.state in FINAL_STATES else max(0.0, now - t.created_at), None))
            else:
                out.append((f.wait_s, f.run_s))
        return out

    def attempts(self, who: Identity, task_id: str) -> dict[str, Any]:
        """The task's attempts, oldest first.

        Raises:
            NotFound: no such task, or not the caller's.
        """
        self._own(who, task_id)
        return {"task_id": task_id, "attempts": [attempt_view(a) for a in self.store.attempts(task_id)]}

    def events(self, who: Identity, task_id: str) -> builtins.list[dict[str, Any]]:
        """The task's history (state changes with their reasons), oldest first.

        Raises:
            NotFound: no such task, or not the caller's.
        """
        self._own(who, task_id)
        return [
            {
                "at": iso(e.at),
                "from_state": e.from_state,
                "to_state": e.to_state,
                "attempt_no": e.attempt_no,
                "reason": e.reason,
            }
            for e in self.store.events(task_id)
        ]

    def checkpoints(self, who: Identity, task_id: str) -> builtins.list[dict[str, Any]]:
        """The `global_step_N` directories each attempt wrote under its `checkpoints/`, by
        attempt then step (reads shared storage: call it off the event loop).

        Raises:
            NotFound: no such task, or not the caller's.
        """
        self._own(who, task_id)
        out: builtins.list[dict[str, Any]] = []
        for a in self.store.attempts(task_id):
            where = Path(checkpoints_dir(PurePosixPath(a.job_root)))
            try:
                found = [(int(m.group(1)), p) for p in where.iterdir() if (m := _STEP_DIR.fullmatch(p.name))]
            except OSError:
                continue  # not written (yet), or not readable from the server
            for step, path in sorted(found):
                if path.is_dir():
                    out.append({"attempt_no": a.attempt_no, "step": step, "path": str(path)})
        return out

    def queue(self, who: Identity) -> dict[str, Any]:
        user = None if who.is_admin else who.user_id
        waiting = self.store.in_states([s.value for s in WAITING_STATES], user)
        active = self.store.in_states([s.value for s in ACTIVE_STATES], user)
        latest = self.store.latest_attempts([t.task_id for t in active])
        pools: dict[str, dict[str, float]] | None = None
        pools_error = None
        if self.pool_capacity is not None:
            try:
                pools = self.pool_capacity()
            except ClusterError as exc:
                pools_error = str(exc)
        return {
            "pools": pools,
            "pools_error": pools_error,
            "pending": [
                {
                    "task_id": t.task_id,
                    "user_id": t.user_id,
                    "state": t.state.value,
                    "pool": t.pool,
                    "priority": t.priority,
                    "next_run_at": iso(t.next_run_at),
                    "pending_reason": pending_reason(t),
                    "estimated_start": iso(t.estimated_start),
                    "created_at": iso(t.created_at),
                }
                for t in waiting
            ],
            "running": [
                {
                    "task_id": t.task_id,
                    "user_id": t.user_id,
                    "state": t.state.value,
                    "pool": t.pool,
                    "ray_submission_id": a.ray_submission_id if (a := latest.get(t.task_id)) else None,
                }
                for t in active
            ],
        }

    # -- logs -----------------------------------------------------------------------------
    def _attempt(self, who: Identity, task_id: str, attempt: str) -> tuple[Task, Attempt]:
        row = self._own(who, task_id)
        if attempt == "latest":
            att = self.store.latest_attempts([task_id]).get(task_id)
        elif SMALL_INT.fullmatch(attempt):
            att = self.store.attempt(task_id, int(attempt))
        else:
            raise Invalid("invalid attempt", [("attempt", "must be 'latest' or a number")])
        if att is None:
            raise NotFound(f"task {task_id} has no attempt {attempt} yet (state {row.state.value})")
        return row, att

    def logs(self, who: Identity, task_id: str, attempt: str, tail: int | None) -> str:
        """An attempt's driver log: the archive once written, else Ray's.

        Raises:
            Invalid: `attempt` is neither `latest` nor a number.
            NotFound: no such task (or not the caller's), or no such attempt yet.
            Unavailable: Ray cannot be read and no archived log exists.
        """
        return self._log_text(self._attempt(who, task_id, attempt)[1], tail)

    def _log_text(self, att: Attempt, tail: int | None) -> str:
        archive = Path(att.job_root) / "logs" / "driver.log"
        if att.log_archived and archive.exists():
            return tail_lines(archive.read_text(errors="replace"), tail)
        try:
            return self.jobs.logs(att.ray_submission_id, tail)
        except (JobNotFound, ClusterError) as exc:
            if archive.exists():
                return tail_lines(archive.read_text(errors="replace"), tail)
            if isinstance(exc, JobNotFound):
                return ""  # written but not yet accepted by Ray: nothing logged yet
            raise Unavailable(f"Ray is unavailable and no archived log exists: {exc}") from None

    def log_now(self, who: Identity, task_id: str, attempt: str) -> tuple[str, bool]:
        """An attempt's whole driver log as it is now, and whether it is complete (the attempt
        ended before the log was read, so nothing more will be written to it).

        Raises:
            Invalid, NotFound, Unavailable: as `logs`.
        """
        row, att = self._attempt(who, task_id, attempt)
        ended = att.end_time is not None or att.ray_status in _RAY_ENDED or row.state in FINAL_STATES
        return self._log_text(att, None), ended
