"""Argus's Grafana dashboards, built from Python data: cluster, users, nodes and task.

Owns `DASHBOARDS` (each dashboard's panels, their PromQL and template variables); their JSON is
`grafana.dashboard_json`'s. The live test runs every panel's
PromQL (`Dashboard.exprs()`) against a real Prometheus scraping a real server and Ray cluster.

Series used: the `argus_*` series of `GET /metrics`, Ray's per-node `ray_node_*` series (GPU ones
only exist on nodes with GPUs) and Prometheus's `up`. Ray's series are tied to Argus's nodes
through `ip` (`... and on (ip) argus_node_up{node="$node"}`), as the alerts are, so the panels
work however Ray is scraped.
"""

from __future__ import annotations

from argus.monitoring.grafana import Dashboard, Panel, Query, Variable
from argus.monitoring.rules import IDLE_PERCENT


def _q(expr: str, legend: str = "") -> Query:
    return Query(" ".join(expr.split()), legend)


POOL = Variable("pool", "label_values(argus_gpus, pool)", "pool")
_IDLE_HELD = (
    '(sum by (ip) (argus_node_gpus_allocated{pool=~"$pool"}) and on (ip) '
    f"(avg by (ip) (ray_node_gpus_utilization) < {IDLE_PERCENT}))"
)


def _wait_quantile(q: float) -> Query:
    return _q(
        f'histogram_quantile({q}, sum by (le) (increase(argus_task_wait_seconds_bucket{{pool=~"$pool"}}[30m])))',
        f"p{int(q * 100)}",
    )


CLUSTER = Dashboard(
    uid="argus-cluster",
    title="Argus / Cluster",
    description="GPUs free, allocated and draining per pool, how many allocated GPUs sit idle, "
    "the queue by the scheduler's reasons, wait times and the control plane's own health.",
    variables=(POOL,),
    panels=(
        Panel(
            "GPUs per pool and state",
            (_q('sum by (pool, state) (argus_gpus{pool=~"$pool"})', "{{pool}} {{state}}"),),
            description="free and allocated as admission counts them; draining: GPUs of draining nodes",
            stack=True,
        ),
        Panel(
            "Allocated share of schedulable GPUs",
            (
                _q(
                    'sum(argus_gpus{pool=~"$pool", state="allocated"}) '
                    '/ clamp_min(sum(argus_gpus{pool=~"$pool", state=~"allocated|free"}), 1)',
                    "allocated",
                ),
            ),
            kind="stat",
            unit="percentunit",
            width=6,
        ),
        Panel(
            f"Allocated GPUs idle (under {IDLE_PERCENT}% utilisation)",
            (
                _q(
                    f"(sum({_IDLE_HELD}) or vector(0)) "
                    '/ clamp_min(sum(argus_node_gpus_allocated{pool=~"$pool"}) or vector(0), 1)',
                    "idle share",
                ),
            ),
            kind="stat",
            unit="percentunit",
            width=6,
            description="GPUs Argus tasks hold on nodes whose Ray GPU utilisation averages under "
            f"{IDLE_PERCENT}%; the GpuIdle alert fires when this lasts 30 minutes",
        ),
        Panel(
            "Waiting tasks by reason",
            (_q('sum by (reason) (argus_pending_tasks{pool=~"$pool"})', "{{reason}}"),),
            description="the scheduler's own pending codes (Resources, Priority, QuotaUser, MaxRunning, ...)",
            stack=True,
        ),
        Panel("Tasks by state", (_q("sum by (state) (argus_tasks)", "{{state}}"),), stack=True),
        Panel(
            "Wait time, accepted to started (last 30 minutes)",
            (_wait_quantile(0.5), _wait_quantile(0.9), _wait_quantile(0.99)),
            unit="s",
        ),
        Panel(
            "GPU utilisation, cluster average (Ray)",
            (_q("avg(ray_node_gpus_utilization)", "utilisation"),),
            unit="percent",
            description="Ray's per-GPU utilisation; empty on clusters without GPUs",
        ),
        Panel(
            "Scheduler: pass time p99 and admissions",
            (
                _q(
                    "histogram_quantile(0.99, sum by (le) "
                    "(rate(argus_scheduler_pass_seconds_bucket[$__rate_interval])))",
                    "pass p99 (s)",
                ),
                _q("sum(rate(argus_scheduler_admissions_total[$__rate_interval]))", "admissions / s"),
            ),
        ),
        Panel(
            "API requests by route and code",
            (_q("sum by (route, code) (rate(argus_api_requests_total[$__rate_interval]))", "{{route}} {{code}}"),),
            unit="reqps",
        ),
    ),
)


def _gpu_hours(by: str) -> str:
    return f'sum by ({by}) (increase(argus_user_gpu_seconds_total{{user=~"$user", pool=~"$pool"}}[$__range])) / 3600'


USER = Variable("user", "label_values(argus_user_gpu_seconds_total, user)", "user")
USERS = Dashboard(
    uid="argus-users",
    title="Argus / Users",
    description="Who uses how many GPUs: GPU-hours over the dashboard's range (from the "
    "GPU-hour ledger; running tasks count up to now), GPUs held now, and GPUs held idle.",
    variables=(USER, POOL),
    panels=(
        Panel(
            "GPU-hours per user (dashboard range)",
            (_q(f"sort_desc({_gpu_hours('user')})", "{{user}}"),),
            kind="bargauge",
            unit="h",
            instant=True,
        ),
        Panel(
            "GPU-hours per user and pool (dashboard range)",
            (_q(_gpu_hours("user, pool"), "{{user}} {{pool}}"),),
            kind="table",
            unit="h",
            instant=True,
        ),
        Panel(
            "GPUs held by running tasks, per user",
            (_q('sum by (user) (argus_user_gpus_allocated{user=~"$user", pool=~"$pool"})', "{{user}}"),),
            stack=True,
        ),
        Panel(
            "Running tasks per user",
            (_q('sum by (user) (argus_user_tasks{user=~"$user", state="RUNNING"})', "{{user}}"),),
            stack=True,
        ),
        Panel(
            "Waiting tasks per user",
            (_q('sum by (user) (argus_user_tasks{user=~"$user", state=~"QUEUED|PENDING_RESOURCES"})', "{{user}}"),),
            stack=True,
        ),
        Panel(
            "GPUs held on average, per user (rate of GPU-seconds)",
            (
                _q(
                    "sum by (user) "
                    '(rate(argus_user_gpu_seconds_total{user=~"$user", pool=~"$pool"}[$__rate_interval]))',
                    "{{user}}",
                ),
            ),
            description="GPU-hours per hour: the ledger's GPU-seconds counter as a rate",
        ),
        Panel(
            "Where each user holds GPUs",
            (_q('sum by (user, node, pool) (argus_node_gpus_allocated{user=~"$user", pool=~"$pool"})', ""),),
            kind="table",
            instant=True,
        ),
        Panel(
            f"GPUs held on nodes under {IDLE_PERCENT}% utilisation, per user",
            (
                _q(
                    'sum by (user) (sum by (ip, user) (argus_node_gpus_allocated{user=~"$user", pool=~"$pool"}) '
                    f"and on (ip) (avg by (ip) (ray_node_gpus_utilization) < {IDLE_PERCENT}))",
                    "{{user}}",
                ),
            ),
            description="abnormal use: held but (by Ray's per-node average) not used",
        ),
    ),
)

_ON_POOL_NODES = 'and on (ip) argus_node_up{pool=~"$pool"}'
NODES = Dashboard(
    uid="argus-nodes",
    title="Argus / Nodes",
    description="Node health, GPUs per node (Argus's view) and what Ray measures on each node.",
    variables=(POOL,),
    panels=(
        Panel(
            "Worker nodes up (Ray)",
            (_q('max by (node, ip, pool) (argus_node_up{pool=~"$pool"})', "{{node}} ({{ip}})"),),
            kind="state-timeline",
        ),
        Panel("Nodes by state", (_q("sum by (state) (argus_nodes)", "{{state}}"),), stack=True),
        Panel(
            "GPUs per node",
            (_q('sum by (node, state) (argus_node_gpus{pool=~"$pool"})', "{{node}} {{state}}"),),
            stack=True,
        ),
        Panel(
            "GPUs allocated per node and user",
            (_q('sum by (node, user) (argus_node_gpus_allocated{pool=~"$pool"})', "{{node}} {{user}}"),),
            stack=True,
        ),
        Panel(
            "GPU utilisation per node IP (Ray)",
            (_q(f"avg by (ip) (ray_node_gpus_utilization {_ON_POOL_NODES})", "{{ip}}"),),
            unit="percent",
        ),
        Panel(
            "GPU memory used per node IP (Ray)",
            (_q(f"sum by (ip) (ray_node_gram_used {_ON_POOL_NODES})", "{{ip}}"),),
            unit="mbytes",
        ),
        Panel(
            "CPU utilisation per node IP (Ray)",
            (_q(f"avg by (ip) (ray_node_cpu_utilization {_ON_POOL_NODES})", "{{ip}}"),),
            unit="percent",
        ),
        Panel(
            "Control plane",
            (
                _q('max(up{job="argus"})', "argus server up"),
                _q("max(argus_ray_up)", "Ray reachable"),
                _q('count(up{job="ray"} == 1)', "Ray node endpoints up"),
            ),
        ),
        Panel(
            "Head record age",
            (_q("max(argus_head_record_age_seconds)", "age"),),
            unit="s",
            description="age of head.json on shared storage; -1 when there is none",
        ),
    ),
)

_TASK_NODE = 'and on (ip) argus_node_up{node="$node"}'
TASK = Dashboard(
    uid="argus-task",
    title="Argus / Task",
    description="One task, through what it shares labels with. No Prometheus label holds a task "
    "id (by design: ids are unbounded), so pick the task's user, pool, node and workload as "
    "`argus status TASK` shows them (the node of its latest attempt). The panels show the GPUs "
    "the user holds on that node and the node's utilisation, the run-time distribution of the "
    "workload's attempts, and how tasks ended. The task's own GPU-seconds, wait and run time are "
    "in `argus status TASK` and `argus usage --by task`.",
    variables=(
        Variable("user", "label_values(argus_node_gpus_allocated, user)", "user", multi=False),
        Variable("pool", "label_values(argus_gpus, pool)", "pool", multi=False),
        Variable("node", 'label_values(argus_node_up{pool="$pool"}, node)', "node", multi=False),
        Variable("workload", "label_values(argus_task_run_seconds_count, workload)", "workload", multi=False),
    ),
    panels=(
        Panel(
            "GPUs $user holds on $node",
            (_q('sum(argus_node_gpus_allocated{user="$user", node="$node"})', "GPUs"),),
        ),
        Panel(
            "GPU utilisation on $node (Ray)",
            (_q(f"avg by (GpuIndex) (ray_node_gpus_utilization {_TASK_NODE})", "GPU {{GpuIndex}}"),),
            unit="percent",
            description="Ray reports utilisation per node IP: nodes sharing an IP show together",
        ),
        Panel(
            "GPU memory used on $node (Ray)",
            (_q(f"sum(ray_node_gram_used {_TASK_NODE})", "used"),),
            unit="mbytes",
        ),
        Panel(
            "$user: GPUs held and GPU-hours (dashboard range)",
            (
                _q('sum(argus_user_gpus_allocated{user="$user"})', "GPUs held"),
                _q('sum(increase(argus_user_gpu_seconds_total{user="$user"}[$__range])) / 3600', "GPU-hours"),
            ),
            kind="stat",
            instant=True,
        ),
        Panel(
            "Attempt run time of $workload (dashboard range)",
            (_q('sum by (le) (increase(argus_task_run_seconds_bucket{workload="$workload"}[$__range]))', "{{le}}"),),
            kind="bargauge",
            instant=True,
            description="attempts of this workload that ended in the range, by run time (histogram buckets)",
        ),
        Panel(
            "Attempt run time quantiles of $workload",
            tuple(
                _q(
                    f"histogram_quantile({q}, sum by (le) "
                    '(increase(argus_task_run_seconds_bucket{workload="$workload"}[$__range])))',
                    f"p{int(q * 100)}",
                )
                for q in (0.5, 0.9)
            ),
            kind="stat",
            unit="s",
            instant=True,
        ),
        Panel(
            "Task ends by state and cause (dashboard range, all tasks)",
            (_q("sum by (state, cause) (increase(argus_task_ends_total[$__range]))", "{{state}} {{cause}}"),),
            kind="table",
            instant=True,
        ),
        Panel(
            "Pool $pool: GPUs and waiting tasks",
            (
                _q('sum by (state) (argus_gpus{pool="$pool"})', "GPUs {{state}}"),
                _q('sum by (reason) (argus_pending_tasks{pool="$pool"})', "waiting: {{reason}}"),
            ),
        ),
    ),
)

DASHBOARDS: dict[str, Dashboard] = {"cluster": CLUSTER, "users": USERS, "nodes": NODES, "task": TASK}
