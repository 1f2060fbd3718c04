"""The scheduler loop: keep tasks in step with Ray, archive logs, admit and submit.

Owns the order of one pass, `tick(now)`:

1. sync: every SUBMITTED or RUNNING task's latest attempt is read back from Ray and the task
   moved accordingly (an attempt written but never accepted by Ray is submitted now, once);
2. archive: an attempt whose Ray job ended gets its full log written to
   `<job_root>/logs/driver.log` (one lost with its Ray head: the log left in the old Ray
   session directory, else a line saying it was lost), and a Ray job still alive under a task
   that was cancelled is stopped;
3. admission (only after a sync that reached Ray, so a restart never admits before it has
   reconciled): the waiting tasks, the running ones (with their time limits) and the free GPUs
   per node go to the pure policy `argus.domain.scheduling.plan`; the tasks it starts are
   submitted (a retry resuming from an earlier attempt's checkpoint: `argus.scheduler.resume`),
   and every other waiting task records the policy's reason (PENDING_RESOURCES); with
   `scheduler.preemption: priority`, `argus.scheduler.preempt` may stop tasks for the blocked head.

Time limits are enforced in the sync: a task past its limit is stopped and ends TIMEOUT.
`run(stop)` paces passes: a nudge from the API starts one that only admits; a full pass (sync,
archive, admit) runs every `interval_s`. What a Ray status means for a task is decided in
`argus.domain.outcome` (pure); this module acts on the decisions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from argus.cluster.errors import ClusterError, ClusterUnavailable, JobNotFound, SubmissionRefused
from argus.domain.admission import NodeFree, bookings, free_gpus, pool_summary
from argus.domain.durations import format_duration
from argus.domain.failure import FailureCause
from argus.domain.fairshare import fair_share, horizon_start
from argus.domain.outcome import Outcome, attempts_used, decide_outcome
from argus.domain.paths import job_root as compute_job_root
from argus.domain.records import Attempt, Dispatch, Task
from argus.domain.scheduling import Limits, RunningJob, plan
from argus.domain.task import (
    ACTIVE_STATES,
    FINAL_STATES,
    WAITING_STATES,
    TaskState,
    attempt_submission_id,
)
from argus.ports import Clock, ClusterView, JobTool, SchedulerObserver
from argus.scheduler.archive import ARCHIVE_TRIES, LOST, LogArchiver  # noqa: F401
from argus.scheduler.dispatch_inputs import DispatchInputs
from argus.scheduler.pacing import Pacer
from argus.scheduler.preempt import Preemptor
from argus.scheduler.ray_view import RayNodes, RecentSnapshots, lost_in_ray, seen_in_ray, with_node_loss
from argus.scheduler.resume import start_resuming, with_resume
from argus.scheduler.secrets import JobSecrets
from argus.settings import ArgusSettings
from argus.spec.errors import SpecError
from argus.spec.inputs import check_inputs
from argus.spec.render import prepare_submission
from argus.spec.taskspec import POOL_LABEL
from argus.store.code import CodeStore
from argus.store.tasks import TaskStore, wait_changed

log = logging.getLogger("argus.scheduler")
LIGHT_SNAPSHOT_AGE_S = 1.0  # a light pass's Ray snapshot may be this old (`RecentSnapshots`)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class Scheduler:
    """One scheduler per server process."""

    def __init__(
        self,
        settings: ArgusSettings,
        store: TaskStore,
        jobs: JobTool,
        snapshots: ClusterView,
        clock: Clock = time.time,
        code: CodeStore | None = None,
        secrets: JobSecrets | None = None,
        observer: SchedulerObserver | None = None,
    ):
        """Args:
        code: the snapshots tasks were accepted with (a `code:` shorthand is pinned there).
        secrets: writes an attempt's secrets file right before submission (None: a task that
            names secrets fails at submission, CONFIG).
        observer: told how long each pass took and how many attempts it started (metrics).
        """
        self.settings, self.observer = settings, observer
        self.inputs = DispatchInputs(settings.shared_root, code, secrets)
        self.store, self.jobs, self.clock = store, jobs, clock
        self.snapshots = RecentSnapshots(snapshots)  # a light pass may reuse one LIGHT_SNAPSHOT_AGE_S old
        self.reconciled = False
        self.last_tick_at: float | None = None
        self.last_error: str | None = None
        # What the last pass learnt of Ray, for /healthz (which never calls Ray itself): why
        # it was unreachable (None: it answered), and when it last answered a pass.
        self.ray_error: str | None = None
        self.ray_ok_at: float | None = None
        self._snapshot_at: float | None = None
        self._blocked_by: str | None = None
        self._kept: str | None = None  # the task the last full pass reserved: it keeps its place
        self._archiver, self._preemptor = LogArchiver(settings, store, jobs), Preemptor(settings, store, jobs)
        self._archive_failures = self._archiver.failures
        self._usage: tuple[dict[str, float], dict[str, float]] | None = None
        # A nudged pass admits only; a full pass (sync, archive, admit) every `interval_s`, or
        # when a nudge asks for one. Nudges within `min_tick_gap_s` of a pass share the next.
        cfg = settings.scheduler
        self._pacer = Pacer(
            "scheduler tick",
            cfg.interval_s,
            min_gap_s=cfg.min_tick_gap_s,
            full_share=cfg.full_pass_share,
            clock=clock,
            log=log,
        )
        self._lock = threading.Lock()

    # -- pacing ---------------------------------------------------------------------------
    def nudge(self, sync: bool = False) -> None:
        """Ask for a pass now: a task arrived (admit), or one was cancelled (`sync`: its GPUs
        are free once Ray is read back)."""
        self._pacer.nudge(full=sync)

    def run(self, stop: threading.Event) -> None:
        """Tick until `stop` is set, paced by `argus.scheduler.pacing.Pacer`: a nudged pass
        admits only (syncing every active task with Ray, one call each, happens on the interval
        and when a nudge asked for it); a failed tick is logged, kept in `last_error` and retried
        at the next one."""
        self._pacer.run(stop, lambda now, full: self.tick(now, full=full), self._tick_failed)

    def _tick_failed(self, error: str) -> None:
        self.last_error = error

    def tick(self, now: float, full: bool = True) -> None:
        """One pass: sync with Ray, archive, then admit (see the module docstring).

        Args:
            full: sync and archive first; False admits only (no task is read back from Ray),
                which is allowed only once the first full pass has reconciled.
        """
        with self._lock:
            full, t0 = full or not self.reconciled, time.perf_counter()
            try:
                if full:
                    self._archiver.remove_ended_secrets()  # first: Ray may be unreachable
                    self.sync(now)
                    self.archive()
                if not self.reconciled:
                    self.reconciled = True
                self.admit(now, full=full)
                if full and self._snapshot_at != now:
                    self.snapshots.snapshot()  # nothing to admit: is the GCS there at all?
                self.last_error = None
                if full or self._snapshot_at == now:
                    self.ray_error, self.ray_ok_at = None, now
            except ClusterUnavailable as exc:
                self.last_error = self.ray_error = str(exc)
                log.warning("Ray is unavailable: %s", exc)
            self.last_tick_at = now
            if self.observer is not None:
                self.observer.pass_done(time.perf_counter() - t0, full)

    # -- 1. sync --------------------------------------------------------------------------
    def sync(self, now: float) -> bool:
        """Read every active task's attempt back from Ray. Returns whether any task ended.

        Raises:
            ClusterUnavailable: Ray cannot be reached (nothing was changed).
        """
        active = self.store.in_states([s.value for s in ACTIVE_STATES])
        latest = self.store.latest_attempts([t.task_id for t in active])
        nodes = RayNodes(self.snapshots)  # one snapshot at most, and only for a new driver node
        ended = False
        for task in active:
            attempt = latest.get(task.task_id)
            if attempt is None:  # cannot happen: SUBMITTED is entered with its attempt
                continue
            try:
                if attempt.submitted_at is None:
                    self._resubmit_if_lost(task, attempt, now)
                    continue
                ended |= self._sync_one(task, attempt, now, nodes)
            except ClusterUnavailable:
                raise  # Ray is away: no pass may admit before it has reconciled
            except Exception:  # one task's trouble must not stop every other task's pass
                log.exception("syncing %s failed; it is retried at the next pass", task.task_id)
        return ended

    def _resubmit_if_lost(self, task: Task, attempt: Attempt, now: float) -> None:
        sid = attempt.ray_submission_id
        try:
            self.jobs.status(sid, diagnose=False)
        except JobNotFound:
            # Read again, with the spec: the task may have been cancelled since this pass began.
            current = self.store.get_with_spec(task.task_id)
            if current is not None and current[0].state not in FINAL_STATES:
                self._submit(Dispatch(current[0], attempt, current[1]), now)
            return
        self.store.mark_submitted(sid, now)

    def _sync_one(self, task: Task, attempt: Attempt, now: float, nodes: RayNodes) -> bool:
        sid = attempt.ray_submission_id
        try:
            view = with_node_loss(self.jobs.status(sid), attempt, nodes)  # NODE_LOST: named node
        except JobNotFound:
            view = None
        tries = task.attempts
        if view is None or view.status == "FAILED":  # only failures worth retrying (never PREEMPTED) count
            earlier = self.store.attempts(task.task_id)
            tries = attempts_used(a.failure_kind for a in earlier if a.attempt_no < attempt.attempt_no)
        outcome = decide_outcome(view, attempts=tries, max_attempts=self.settings.scheduler.max_attempts)
        if view is None:
            seen = lost_in_ray(attempt, outcome.evidence, now)
            if seen != attempt:
                self.store.mark_lost(sid, outcome.evidence, now)
        else:
            seen = seen_in_ray(attempt, view, nodes)
            if seen != attempt:
                self.store.record_ray_view(
                    sid,
                    ray_status=view.status,
                    message=seen.message,
                    start_time=seen.start_time,
                    end_time=seen.end_time,
                    failure_kind=seen.failure_kind,
                    driver_node_id=seen.driver_node_id,
                    driver_node_ip=seen.driver_node_ip,
                    driver_node_name=seen.driver_node_name,
                )
        if outcome.state in ACTIVE_STATES and now - self._started(seen, now) >= task.time_limit_s:
            return self._time_out(task, seen, now)
        return self._apply(task, seen, outcome, now)

    def _time_out(self, task: Task, attempt: Attempt, now: float) -> bool:
        """Stop the Ray job at the task's time limit; the task ends TIMEOUT."""
        limit = format_duration(task.time_limit_s)
        reason, summary = f"time limit {limit} reached", f"stopped at its time limit ({limit})"
        if self.store.time_out(task.task_id, now, reason, attempt.attempt_no, summary):
            try:
                self.jobs.stop(attempt.ray_submission_id)
            except ClusterError:
                pass  # the archive pass stops it once Ray answers
        return True

    def _apply(self, task: Task, attempt: Attempt, outcome: Outcome, now: float) -> bool:
        """Move the task to the state Ray's view calls for, by the store's named transition."""
        tid, no, to = task.task_id, attempt.attempt_no, outcome.state
        if to == task.state:
            return False
        cause = outcome.cause.value if outcome.cause is not None else None
        summary = outcome.evidence if outcome.cause is not None else None
        if to == TaskState.RUNNING:
            self.store.mark_running(tid, now, outcome.reason, no)
        elif to == TaskState.PENDING_RESOURCES:
            retry = self.settings.scheduler.retry_interval_s
            detail = f"retrying in {retry:g}s after: {outcome.evidence}"
            self.store.retry_later(tid, now, outcome.reason, no, now + retry, detail)
        elif to == TaskState.QUEUED and outcome.cause is not None:  # a retry always has its cause
            self.store.requeue(tid, now, outcome.reason, no, outcome.cause.value, outcome.evidence)
        elif to in FINAL_STATES:
            self.store.finish(tid, to, now, outcome.reason, no, cause, summary)
        # SUBMITTED (Ray has not started the job): a task never goes back from RUNNING.
        return to not in ACTIVE_STATES

    # -- 2. archive -----------------------------------------------------------------------
    def archive(self) -> None:
        """Archive ended attempts' logs; stop Ray jobs that outlived their cancelled task
        (`argus.scheduler.archive.LogArchiver.archive`)."""
        self._archiver.archive()

    # -- 3. admission ---------------------------------------------------------------------
    def capacity(
        self, active: list[Task], latest: Mapping[str, Attempt], now: float, max_age_s: float = 0.0
    ) -> tuple[dict[str, float], dict[str, str | None], dict[str, float]]:
        """Per schedulable node: free GPUs, its pool (the `pool` label) and its total GPUs.

        Free GPUs are Ray's live view less only the admitted gangs Ray has not placed yet
        (`argus.domain.admission.bookings` and `free_gpus`): a SUBMITTED task's (its driver has
        not started), and a task's that started less than PLACEMENT_GRACE_S ago unless Ray shows
        its GPUs taken; each is fitted where Ray could place it now. Where Argus once counted a gang
        never matters: Ray knows where it went, or chooses anew.
        """
        snap = self.snapshots.snapshot(now, max_age_s)
        self._snapshot_at = self.snapshots.taken_at  # `now` only when Ray was read in this pass
        nodes = snap.schedulable()
        used = sum(max(0.0, n.total_gpus - n.available_gpus) for n in snap.nodes if n.alive and not n.is_head)
        total = {n.node_id: n.total_gpus for n in nodes}
        pools = {n.node_id: n.labels.get(POOL_LABEL) for n in nodes}
        free = free_gpus(
            {n.node_id: n.available_gpus for n in nodes},
            total,
            bookings(active, latest, now),
            ray_used=used,
            pools=pools,
        )
        return free, pools, total

    def node_capacity(self) -> NodeFree:
        """Per schedulable node now: free GPUs as admission counts them, pool, total GPUs.

        Raises:
            ClusterUnavailable: Ray cannot be read.
        """
        active = self.store.in_states([s.value for s in ACTIVE_STATES])
        return self.capacity(active, self.store.latest_attempts([t.task_id for t in active]), self.clock())

    def pool_capacity(self) -> dict[str, dict[str, float]]:
        """GPUs per pool of the schedulable nodes, as admission counts them (`pool_summary`: for
        the queue and nodes views). Raises ClusterUnavailable when Ray cannot be read."""
        return pool_summary(*self.node_capacity())

    def usage(self, now: float) -> tuple[dict[str, float], dict[str, float]]:
        """Per user: decayed GPU-hours (fair share) and GPU-hours over the last 24 hours.

        The formula is `argus.domain.fairshare.fair_share`'s, the simulator's too.
        """
        half_life = self.settings.scheduler.fair_share_half_life_h * 3600
        return fair_share(self.store.usage_rows(horizon_start(now, half_life)), now, half_life)

    @property
    def last_fair_share(self) -> dict[str, float] | None:
        """Per user, the decayed GPU-hours the last full pass ordered by (None: none ran)."""
        return self._usage[0] if self._usage else None

    def fair_share_now(self) -> dict[str, float]:
        """Per user, the decayed GPU-hours the last full pass ordered by (computed if none ran)."""
        return (self._usage or self.usage(self.clock()))[0]

    def admit(self, now: float, full: bool = True) -> None:
        """Plan with the policy and act on it: start what it starts, record why others wait.

        A full pass plans the whole queue. A nudged pass plans only new and due tasks, and only
        when the last full pass left no task waiting for resources at the head of the order
        (else it could jump ahead of that task; the next full pass decides instead).
        """
        cfg = self.settings.scheduler
        if full:
            waiting = self.store.waiting([s.value for s in WAITING_STATES])
        elif self._blocked_by is not None:
            return
        else:
            waiting = self.store.due(now)
        if not waiting:
            if full:
                self._blocked_by = None
            return
        active = self.store.in_states([s.value for s in ACTIVE_STATES])
        latest = self.store.latest_attempts([t.task_id for t in active])
        free, pools, totals = self.capacity(active, latest, now, 0.0 if full else LIGHT_SNAPSHOT_AGE_S)
        if full or self._usage is None:
            self._usage = self.usage(now)
        running = [
            RunningJob(t.task_id, t.user_id, a.placement if a else {}, self._started(a, now) + t.time_limit_s)
            for t, a in ((t, latest.get(t.task_id)) for t in active)
        ]
        limits = Limits(cfg.max_running_tasks, cfg.user_max_gpus, cfg.user_gpu_hours_per_day)
        jobs, (usage, day) = [w.job for w in waiting], self._usage
        result = plan(
            now, jobs, running, free, cfg.policy, limits, usage, day, keep=self._kept, pools=pools, totals=totals
        )
        if full or result.blocked_by is not None:  # a head found by a nudged pass counts too
            self._blocked_by = result.blocked_by
            self._kept = result.reserved[0] if result.reserved else None
        by_id = {w.job.id: w for w in waiting}
        # Only the waits whose reason or estimate changed are written (none: no transaction).
        self.store.record_waits(
            [
                (tid, w.code.value, w.detail, w.estimated_start)
                for tid, w in result.waits.items()
                if wait_changed(by_id[tid], w.code.value, w.detail, w.estimated_start)
            ],
            now,
        )
        started = sum(self._admit_one(job.id, placement.to_json(), now) for job, placement in result.start)
        blocked = result.blocked_by if full and cfg.preemption == "priority" else None
        if blocked is not None and (head := self.store.get(blocked)) is not None:
            self._preemptor.make_room(head, active, latest, free, pools, result.start, now)
        if started and self.observer is not None:
            self.observer.admitted(started)

    @staticmethod
    def _started(attempt: Attempt | None, now: float) -> float:
        """When an attempt's time limit started counting: Ray's start, else its submission."""
        if attempt is None:
            return now
        return attempt.start_time or attempt.submitted_at or attempt.created_at or now

    def _admit_one(self, task_id: str, placement: Mapping[str, float], now: float) -> bool:
        """Start an attempt (False: the task was cancelled meanwhile)."""
        if (task := self.store.get(task_id)) is None:  # the whole row: the pass read only its `Job`
            return False
        sid = attempt_submission_id(task.task_id, task.attempts + 1)
        root = compute_job_root(self.settings.shared_root, sid, task.user_id)
        dispatch = start_resuming(self.store, task, str(root), placement, now)  # from a checkpoint
        if dispatch is not None:
            self._submit(dispatch, now)
        return dispatch is not None

    def _submit(self, dispatch: Dispatch, now: float) -> None:
        """Call `submit_job` for an attempt already on record (never twice: Ray refuses a
        duplicate id, and that refusal counts as accepted). A task cancelled meanwhile has its
        job stopped right after."""
        task, attempt, text = dispatch.task, dispatch.attempt, dispatch.jobspec_yaml
        tid, sid = task.task_id, attempt.ray_submission_id
        try:
            spec, rendered = prepare_submission(
                self.settings.ray,
                text,
                _utc(now),
                source=tid,
                submission_id=sid,
                user=task.user_id,
                validate=False,
                resolve_code=self.inputs.pinned_code(task),
            )
            rendered = with_resume(spec, rendered, attempt)
            # Again right before submission: a link under common/ may have changed since.
            check_inputs(spec, self.settings.shared_root, task.user_id, source=tid)
            if spec.secret_names:
                self.inputs.hand_secrets(task, sid, spec.secret_names)
            self.jobs.submit(rendered, text)
        except SubmissionRefused:
            pass  # Ray has it already: this attempt was submitted before a crash
        except ClusterUnavailable:
            raise
        except SpecError as exc:
            why = f"inputs refused at submission: {'; '.join(str(p) for p in exc.problems)}"
            self.store.finish(tid, TaskState.FAILED, now, why, attempt.attempt_no, FailureCause.CONFIG.value, why)
            return
        except (ClusterError, OSError, ValueError) as exc:
            self.store.finish(
                tid,
                TaskState.FAILED,
                now,
                f"submission failed: {exc}",
                attempt.attempt_no,
                FailureCause.PLATFORM.value,
                str(exc),
            )
            return
        self.store.mark_submitted(sid, self.clock(), "PENDING")
        after = self.store.get(tid)
        if after is not None and after.state in FINAL_STATES:
            self.jobs.stop(sid)  # cancelled while it was being submitted
