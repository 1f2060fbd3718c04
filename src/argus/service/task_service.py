"""What the task routes do: accept, cancel, change a priority (and, through `TaskQueries`, show,
list, serve logs, list the queue).

Owns acceptance (the YAML parsed and checked exactly like `argus spec validate`, inputs confined
to `<shared_root>/common/`, the task stored verbatim as QUEUED, the scheduler nudged) and the
admin's priority changes. The reads and the visibility rule (a task that is not the caller's is
not found, the same answer as for one that does not exist) are `argus.service.task_queries`.

The offline verl check is cached (`argus.service.check_cache.CheckCache`); one not in the cache
runs in the `CheckPool`, awaited without holding a thread. The rest of acceptance (parse, cached
check, insert) runs on a few threads of its own (`service.accept_threads`): never on the event
loop, which would then wait on the database's one writer, and never in the thread pool the read
routes use.

Errors are the core's kinds (`argus.domain.errors`: NotFound, Conflict, Invalid, Unavailable),
mapped to HTTP in `argus.service.errors`; an invalid spec is a `SpecError`, the per-user rate a
`RateLimited` (429, which has no domain kind).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
import sqlalchemy as sa

from argus.cluster.errors import ClusterError
from argus.domain.durations import format_duration
from argus.domain.errors import Conflict, Unavailable
from argus.domain.task import (
    ACTIVE_STATES,
    FINAL_STATES,
    TaskState,
    new_task_id,
)
from argus.ports import Clock, JobTool
from argus.service.auth import Identity
from argus.service.check_cache import CHECK_ID, CHECK_USER, CheckCache
from argus.service.checks import CheckPool
from argus.service.ratelimit import RateLimiter
from argus.service.resume_from import check_resume_from, resubmit_text
from argus.service.task_board import TaskBoard
from argus.service.task_inputs import TaskInputs
from argus.service.threads import Workers
from argus.settings import ArgusSettings
from argus.spec.entrypoint import driver_gpus
from argus.spec.errors import Problem, SpecError
from argus.spec.inputs import ResolveCache, input_problems
from argus.spec.loader import load_yaml_mapping
from argus.spec.render import Rendered, render
from argus.spec.taskspec import DEFAULT_PRIORITY, TaskSpec, parse_task_spec
from argus.store.task_inserts import NewTask
from argus.store.tasks import TaskStore


class TaskService(TaskBoard):
    def __init__(
        self,
        settings: ArgusSettings,
        store: TaskStore,
        jobs: JobTool,
        nudge: Callable[..., None],
        clock: Clock = time.time,
        pool_capacity: Callable[[], dict[str, dict[str, float]]] | None = None,
        check_pool: CheckPool | None = None,
        rate: RateLimiter | None = None,
        inputs: TaskInputs | None = None,
        fair_share: Callable[[], dict[str, float]] | None = None,
    ):
        """Args:
        check_pool: runs uncached verl checks (default: `service.check_workers` processes).
        rate: the per-user submission rate (default: from `service.submit_*`).
        inputs: code snapshots, secrets and reward checks (default: none of them; `code:`,
            secrets and rewards are then refused or unchecked).
        fair_share: per user, the decayed GPU-hours the scheduler orders by (the queue board's
            admin view; None: not shown in that order).
        """
        self.settings = settings
        self.pool_capacity = pool_capacity
        self.fair_share = fair_share
        self.store = store
        self.jobs = jobs
        self.nudge = nudge
        self.clock = clock
        svc = settings.service
        self.resolve = ResolveCache()  # dispatch checks again, uncached
        self.checks = CheckCache(
            check_pool
            or CheckPool(
                svc.check_workers,
                max_queued=svc.check_queue_per_user,
                scrub_env=[svc.admin_token_env, svc.secrets_key_env, svc.metrics_token_env, svc.ui_session_key_env],
            )
        )
        self.rate = rate or RateLimiter(svc.submit_rate_per_s, svc.submit_burst)
        self.inputs = inputs or TaskInputs(settings.shared_root, None, None, None, None, svc.reward_check_timeout_s)
        # Acceptance's own threads (one queue hop each way: anyio's hop, with its limiter and
        # cancel scope, cost about twice as much per submission, `run_in_executor` a tenth more).
        self._accepting = Workers(svc.accept_threads, "argus-accept")
        self._rewarding: anyio.CapacityLimiter | None = None

    def close(self) -> None:
        """Stop the check pool's worker processes and the inserts' writer thread."""
        self.checks.pool.close()
        self.store.inserts.close()
        self._accepting.shutdown()

    # -- accept ---------------------------------------------------------------------------
    def parse(self, text: str, user: str | None = None) -> tuple[TaskSpec, Rendered]:
        """Parse a TaskSpec and check its inputs; the verl check is left to `validate`.

        Args:
            user: the submitting user: paths in overrides may lie in their own directory.
        Raises:
            SpecError: the YAML, a field or an input path is invalid.
        """
        cfg = self.settings.ray
        data = load_yaml_mapping(text, "task spec")
        spec = parse_task_spec(data, cfg.shared_root, "task spec", self.inputs.resolver(user))
        # Inputs first: rendering reads the verl config under `code_path` (the reward's keys).
        problems = input_problems(spec, self.settings.shared_root, user, self.resolve)
        if problems:
            raise SpecError("task spec", problems)
        if user is not None:
            self.inputs.check_secrets(user, spec)
        return spec, render(cfg, spec, datetime.now(UTC), submission_id=CHECK_ID, user=CHECK_USER)

    def time_limit_s(self, spec: TaskSpec) -> float:
        """The spec's time limit, else the default; more than the maximum is refused.

        Raises:
            SpecError: `time_limit` is over `scheduler.max_time_limit`.
        """
        cfg = self.settings.scheduler
        limit = spec.time_limit_s or cfg.default_time_limit_s
        if limit > cfg.max_time_limit_s:
            raise SpecError(
                "task spec",
                [
                    Problem(
                        "time_limit",
                        f"must be at most {format_duration(cfg.max_time_limit_s)} "
                        f"(the server's scheduler.max_time_limit)",
                    )
                ],
            )
        return limit

    def set_priority(self, who: Identity, task_id: str, priority: int) -> dict[str, Any]:
        """Admin only: change a waiting task's priority.

        Args:
            priority: 0-1000, already checked by the request body (`PriorityChange`).
        Raises:
            NotFound: no such task.
            Conflict: the task is not waiting.
        """
        row = self._own(who, task_id)
        if not self.store.set_priority(task_id, priority, self.clock(), who.user_id):
            raise Conflict(f"task {task_id} is {row.state.value}: only a waiting task's priority can change")
        self.nudge(sync=True)
        return {"task_id": task_id, "priority": priority}

    def needs_compose(self, parsed: tuple[TaskSpec, Rendered]) -> bool:
        """Whether checking `parsed` composes against verl (slow) rather than hits the cache."""
        spec, rendered = parsed
        return not self.checks.known(spec, rendered)

    def take_rate(self, who: Identity) -> None:
        """Count one submission of `who` against the per-user rate (the admin is not limited).

        Raises:
            RateLimited: over `service.submit_rate_per_s` (429 with Retry-After).
        """
        if not who.is_admin:
            self.rate.take(who.user_id)

    def _admissible(self, who: Identity, spec: TaskSpec) -> float:
        """The checks of a spec that need no compose; returns its time limit in seconds."""
        limit = self.time_limit_s(spec)
        check_resume_from(self.store, who, spec)  # an ended task of the caller's (one read)
        if spec.priority > DEFAULT_PRIORITY and not who.is_admin:
            raise SpecError(
                "task spec",
                [
                    Problem(
                        "priority",
                        f"above {DEFAULT_PRIORITY} is for the admin (`argus priority`); "
                        f"users may lower their own tasks' priority",
                    )
                ],
            )
        return limit

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._accepting.run(fn, *args)

    async def accept(self, who: Identity, text: str) -> dict[str, Any]:
        """`submit`, for the event loop: the work runs on the accept threads, an uncached verl
        check in the check pool; the loop is never blocked and no thread waits on a check.

        Raises:
            SpecError: the spec is invalid (nothing is stored).
            RateLimited: the user has too many checks waiting.
        """

        def prepare() -> tuple[TaskSpec, Rendered, float, bool]:
            spec, rendered = self.parse(text, who.user_id)
            limit = self._admissible(who, spec)
            return spec, rendered, limit, self.inputs.reads_snapshots(who.user_id, spec)

        spec, rendered, limit, holds = await self._off_loop(prepare)
        if not self.checks.known(spec, rendered):
            await self.checks.acheck(who.user_id, spec, rendered, "task spec")
        if spec.reward is not None:
            # On threads of its own: a check waits for a job on a worker node (seconds).
            if self._rewarding is None:
                self._rewarding = anyio.CapacityLimiter(4)
            await anyio.to_thread.run_sync(
                functools.partial(self.inputs.check_reward, who.user_id, spec), limiter=self._rewarding
            )
        if holds:  # the snapshots it reads are held in the insert's transaction
            return await self._off_loop(self._store, who, text, spec, limit, rendered.warnings)
        for row in self._draws(who, text, spec, limit):
            try:
                await self.store.inserts.insert(row)  # with the other requests' rows, one commit
                break
            except sa.exc.IntegrityError:
                continue  # the same id in the same second: draw another suffix
        self.nudge()
        return self._accepted(row.task_id, rendered.warnings)

    async def resubmit(self, who: Identity, task_id: str, options: dict[str, Any]) -> dict[str, Any]:
        """Accept a new task continuing the caller's ended task `task_id` (its stored TaskSpec with
        `resume_from` and `options` set: `argus.service.resume_from.resubmit_text`).

        Raises:
            NotFound: no such task of the caller's. SpecError: as for `accept`.
        """
        text = await self._off_loop(resubmit_text, self.store, who, task_id, options)
        return await self.accept(who, text)

    def submit(self, who: Identity, text: str, parsed: tuple[TaskSpec, Rendered] | None = None) -> dict[str, Any]:
        """Accept a TaskSpec: QUEUED, stored verbatim, the scheduler nudged (blocking).

        Args:
            parsed: `parse(text)`, when the caller has it already.
        Raises:
            SpecError: the spec is invalid (nothing is stored).
        """
        spec, rendered = parsed or self.parse(text, who.user_id)
        limit = self._admissible(who, spec)
        self.checks.check(who.user_id, spec, rendered, "task spec")
        self.inputs.check_reward(who.user_id, spec)
        return self._store(who, text, spec, limit, rendered.warnings)

    def _store(
        self, who: Identity, text: str, spec: TaskSpec, limit: float, warnings: list[str] | None = None
    ) -> dict[str, Any]:
        """Insert the task as QUEUED under a fresh id, note the snapshots it reads, and nudge
        the scheduler. The answer carries the spec's warnings (a credential in env_vars).

        Raises:
            Unavailable: no free task id after 20 draws.
            Conflict: a snapshot the task reads was deleted while it was being accepted.
        """
        with self.inputs.storing(who.user_id, spec) as record:
            task_id = self._insert(who, text, spec, limit)
            record(task_id)
        self.nudge()
        return self._accepted(task_id, warnings)

    @staticmethod
    def _accepted(task_id: str, warnings: list[str] | None) -> dict[str, Any]:
        """The answer to an accepted submission: its id, QUEUED, and the credential warnings."""
        shown = [w for w in warnings or [] if "looks like a credential" in w]
        return {"task_id": task_id, "state": TaskState.QUEUED.value, "warnings": shown}

    def _draws(self, who: Identity, text: str, spec: TaskSpec, limit: float) -> Iterator[NewTask]:
        """The task's row under up to 20 freshly drawn ids, one at a time (the next one only
        when the caller found the last one taken).

        Raises:
            Unavailable: all 20 were taken.
        """
        for _ in range(20):
            yield self._row(who, text, spec, limit)
        raise Unavailable("could not allocate a task id; try again")

    def _row(self, who: Identity, text: str, spec: TaskSpec, limit: float) -> NewTask:
        """The task's row under a freshly drawn id, accepted now."""
        now = self.clock()
        task_id = new_task_id(who.user_id, spec.workload, datetime.fromtimestamp(now, tz=UTC))
        return NewTask(
            task_id=task_id,
            user_id=who.user_id,
            workload=spec.workload,
            jobspec_yaml=text,
            nnodes=spec.nnodes,
            n_gpus_per_node=spec.n_gpus_per_node,
            driver_gpus=driver_gpus(spec),
            now=now,
            priority=spec.priority,
            time_limit_s=limit,
            pool=spec.pool,
            preemptible=spec.preemptible,
        )

    def _insert(self, who: Identity, text: str, spec: TaskSpec, limit: float) -> str:
        """Insert the task as QUEUED under a fresh id; returns the id.

        Raises:
            Unavailable: no free task id after 20 draws.
        """
        for row in self._draws(who, text, spec, limit):
            try:
                self.store.inserts.insert_blocking(row)
                break
            except sa.exc.IntegrityError:
                continue  # the same id in the same second: draw another suffix
        return row.task_id

    # -- cancel ---------------------------------------------------------------------------
    def cancel(self, who: Identity, task_id: str) -> dict[str, Any]:
        """Cancel in any non-final state; a live Ray job is stopped (and, should Ray be
        unreachable now, by the scheduler's archive pass later).

        Raises:
            NotFound: not the caller's task.
            Conflict: it had already ended, or kept changing state.
        """
        for _ in range(5):
            state = self._own(who, task_id).state
            if state in FINAL_STATES:
                raise Conflict(f"task {task_id} already ended ({state.value})")
            now = self.clock()
            if self.store.cancel(task_id, now, f"cancelled by {who.user_id}"):
                if state in ACTIVE_STATES:
                    latest = self.store.latest_attempts([task_id]).get(task_id)
                    if latest is not None:
                        try:
                            self.jobs.stop(latest.ray_submission_id)
                        except ClusterError:
                            pass  # the archive pass stops it once Ray answers
                self.nudge(sync=True)
                return {"task_id": task_id, "state": TaskState.CANCELED.value}
        raise Conflict(f"task {task_id} kept changing state; try again")
