"""Tasks, attempts and their events as the store hands them out: frozen records.

Owns the shape of what travels from the store through the scheduler to the service. Records
are immutable; a change is made by a named store method (`argus.store.tasks.TaskStore`), never
by writing a field. JSON columns are decoded once, in the store (an attempt's `placement` is a
mapping here). Times are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from argus.domain.task import TaskState


@dataclass(frozen=True, slots=True)
class Task:
    """One task, without its TaskSpec text (read by name: `TaskStore.spec_text`)."""

    seq: int
    task_id: str
    user_id: str
    workload: str
    state: TaskState
    nnodes: int
    n_gpus_per_node: int
    driver_gpus: float
    attempts: int
    failure_cause: str | None
    error_summary: str | None
    pending_reason: str | None
    next_run_at: float | None
    created_at: float
    updated_at: float
    ended_at: float | None
    priority: int
    time_limit_s: float
    pending_code: str | None
    estimated_start: float | None
    pool: str | None
    preemptible: bool = False  # it may be stopped for a higher-priority task (`argus.scheduler.preempt`)

    @property
    def total_gpus(self) -> float:
        """The gang's GPUs and the driver's."""
        return self.nnodes * self.n_gpus_per_node + self.driver_gpus


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at running a task on Ray, under its own Ray submission id."""

    id: int
    task_id: str
    attempt_no: int
    ray_submission_id: str
    ray_status: str | None
    failure_kind: str | None
    message: str | None
    job_root: str
    placement: Mapping[str, float]
    created_at: float
    submitted_at: float | None
    start_time: float | None
    end_time: float | None
    log_archived: bool
    # The node Ray ran the driver on, as Ray reports it (always a worker, never the head).
    driver_node_id: str | None = None
    driver_node_ip: str | None = None
    driver_node_name: str | None = None  # the Argus node name (its `argus.io/node` label)
    # GPU samples while it ran, where Ray reports them (`argus.scheduler.gpu_sampler`): their
    # utilisations' sum (percent) and count, and the most memory seen in use on one GPU (bytes).
    gpu_util_sum: float = 0.0
    gpu_util_samples: int = 0
    gpu_mem_peak_bytes: float | None = None
    # The earlier attempt's checkpoint this one resumed from (`argus.scheduler.resume`): its
    # step and its `global_step_N` directory; None for a fresh start.
    resumed_from_step: int | None = None
    resumed_from: str | None = None

    @property
    def gpu_util_mean(self) -> float | None:
        """The mean GPU utilisation (percent) over its samples; None when Ray reported none."""
        return self.gpu_util_sum / self.gpu_util_samples if self.gpu_util_samples else None


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One row of a task's history."""

    id: int
    task_id: str
    at: float
    from_state: str | None
    to_state: str
    attempt_no: int | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Everything the scheduler needs to submit an attempt it has just written."""

    task: Task
    attempt: Attempt
    jobspec_yaml: str = field(repr=False)
