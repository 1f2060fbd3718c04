"""The series the alerts and dashboards may read, by where they come from.

Owns `ARGUS_SERIES` (what the Argus server's `GET /metrics` serves, histogram and counter
samples by their sample names), `RAY_SERIES` (what Ray's per-node metrics agents export;
the GPU ones only on nodes with GPUs) and `PROMETHEUS_SERIES`. The unit tests check that every
expression in `rules` and `dashboards` reads only these; the live test checks that the server
serves every name in `ARGUS_SERIES`.
"""

from __future__ import annotations


def _histogram(name: str) -> tuple[str, ...]:
    return (f"{name}_bucket", f"{name}_sum", f"{name}_count")


ARGUS_SERIES: frozenset[str] = frozenset(
    {
        "argus_tasks",
        "argus_pending_tasks",
        "argus_pending_min_gpus",
        "argus_pending_fits_now",
        "argus_gpus",
        "argus_nodes",
        "argus_node_up",
        "argus_node_gpus",
        "argus_node_gpus_allocated",
        "argus_user_gpus_allocated",
        "argus_user_tasks",
        "argus_user_gpu_seconds_total",
        "argus_task_ends_total",
        "argus_scheduler_admissions_total",
        "argus_scheduler_process_up",
        "argus_scheduler_process_restarts_total",
        "argus_api_requests_total",
        "argus_ray_up",
        "argus_head_record_age_seconds",
        *_histogram("argus_task_wait_seconds"),
        *_histogram("argus_task_run_seconds"),
        *_histogram("argus_scheduler_pass_seconds"),
        *_histogram("argus_api_request_seconds"),
    }
)

# Ray's node metrics (ray.dashboard.modules.reporter): utilisation in percent, memory in MB.
RAY_GPU_SERIES: frozenset[str] = frozenset({"ray_node_gpus_utilization", "ray_node_gram_used"})
RAY_SERIES: frozenset[str] = RAY_GPU_SERIES | {"ray_node_cpu_utilization"}

PROMETHEUS_SERIES: frozenset[str] = frozenset({"up"})

ALL_SERIES: frozenset[str] = ARGUS_SERIES | RAY_SERIES | PROMETHEUS_SERIES
