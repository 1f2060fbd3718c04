"""Argus's Prometheus alerts, as data, and the rules file rendered from them.

Owns `ALERTS` (each alert's name, PromQL, `for`, severity, summary and runbook line) and
`rules_document()`, the `rules/argus.rules.yml` content. The promtool unit tests that make each
alert fire and stay quiet are `rule_tests`'s; docs/monitoring.md explains every alert.

No recording rules: every alert reads the raw series, so the expression in its runbook can be
pasted into Prometheus's expression browser as it is.

Names used here (contract of `GET /metrics`, issue 13): `argus_*` series from the Argus server
(job `argus`), `ray_node_gpus_utilization{ip,GpuIndex}` (percent) from every Ray node (job `ray`),
and Prometheus's own `up`. Joins between Argus and Ray are on `ip`, the node IP as Ray reports it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RULES_FILE = "argus.rules.yml"
GROUP = "argus"
IDLE_PERCENT = 5
STALE_HEAD_S = 90  # head.json is rewritten every 5 s and trusted for 30 s


@dataclass(frozen=True)
class Alert:
    """One alerting rule. `summary` may name labels as `{{ $labels.NAME }}`; `runbook` is the line
    an operator reads first: what the alert means and what to check."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    runbook: str

    def annotations(self) -> dict[str, str]:
        return {"summary": self.summary, "runbook": self.runbook}

    def rule(self) -> dict[str, Any]:
        """The rule as Prometheus's rules file has it."""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": self.annotations(),
        }


def _expr(text: str) -> str:
    """PromQL written over several lines here, one line of text in the files."""
    return " ".join(text.split())


ALERTS: tuple[Alert, ...] = (
    Alert(
        name="ArgusDown",
        expr='up{job="argus"} == 0 or absent(up{job="argus"})',
        for_="2m",
        severity="critical",
        summary="The Argus server does not answer Prometheus's scrape of /metrics",
        runbook=(
            "Nothing is scheduled while the server is down (running Ray jobs go on). Check the "
            "server process (`argus up` restarts it; its log is under the server's workdir), that "
            "its port answers `GET /healthz`, and that the token file Prometheus reads is the "
            "admin or metrics token (a 401 also shows as down: see the target's last error)."
        ),
    ),
    Alert(
        name="SchedulerProcessDown",
        expr="argus_scheduler_process_up == 0 or increase(argus_scheduler_process_restarts_total[10m]) >= 3",
        for_="2m",
        severity="critical",
        summary="The Argus server's scheduler process is not running, or keeps exiting",
        runbook=(
            "The API answers but nothing is admitted, synced or timed out (running Ray jobs go "
            "on). The server starts the process again after 1-30 s: read why it exits in the "
            "server's log (`the scheduler process ... exited with`), and `/healthz` "
            "(`scheduler.process`: restarts, last exit status)."
        ),
    ),
    Alert(
        name="RayHeadUnreachable",
        expr="argus_ray_up == 0",
        for_="2m",
        severity="critical",
        summary="The Argus server cannot reach the Ray head (GCS / job server)",
        runbook=(
            "No task starts or is followed while Ray is unreachable. Check the head node "
            "(`argus head status`, `ray status` on it), its GCS and dashboard ports from the "
            "server's host, and the head record on shared storage (see HeadRecordStale)."
        ),
    ),
    Alert(
        name="HeadRecordStale",
        expr=f"argus_head_record_age_seconds > {STALE_HEAD_S}",
        for_="2m",
        severity="warning",
        summary=f"The Ray head record on shared storage is older than {STALE_HEAD_S}s",
        runbook=(
            "The head rewrites <shared_root>/ray/discovery/<cluster>/head.json every few seconds "
            "while its GCS answers; a stale record means the head died or its publisher stopped, "
            "and node agents will not (re)join. Check the head process and the shared mount; "
            "`argus head start` on the head host starts it again."
        ),
    ),
    Alert(
        name="NodeLostWithTasks",
        expr=_expr(
            """
            (max by (node, ip, pool) (argus_node_up) == 0
               and on (node) sum by (node) (argus_node_gpus_allocated) > 0)
            or
            (sum by (node, ip, pool) (argus_node_gpus_allocated) > 0
               unless on (node) argus_node_up)
            """
        ),
        for_="1m",
        severity="critical",
        summary="Node {{ $labels.node }} is down while Argus tasks hold GPUs on it",
        runbook=(
            "The tasks placed on the node will fail over or end as PLATFORM failures. Check the "
            "node (`argus nodes`, its node agent and raylet logs, the machine itself), then "
            "the affected tasks (`argus tasks --state RUNNING`, `argus status TASK`). Drain the "
            "node (`argus nodes drain NODE`) if it keeps flapping."
        ),
    ),
    Alert(
        name="SchedulerStuck",
        expr=_expr(
            """
            sum by (pool) (argus_pending_fits_now) > 0
            """
        ),
        for_="15m",
        severity="warning",
        summary=(
            "Tasks in pool {{ $labels.pool }} wait for Resources although their whole gang fits the free "
            "GPUs (for 15 minutes)"
        ),
        runbook=(
            "The scheduler counts tasks waiting for Resources whose gang fits the free GPUs per "
            "node as admission counts them; a pass should have started them. Look for errors in "
            "the server log (`scheduler tick`), at `/healthz` (last pass, Ray reachable), and for "
            "GPUs Ray holds that no task owns (`ray status`, `argus tasks --state SUBMITTED`)."
        ),
    ),
    Alert(
        name="GpuIdle",
        expr=_expr(
            f"""
            (sum by (ip, node, pool, user) (argus_node_gpus_allocated) > 0)
            and on (ip)
            (avg by (ip) (ray_node_gpus_utilization) < {IDLE_PERCENT})
            """
        ),
        for_="30m",
        severity="warning",
        summary=(
            f"GPUs that {{{{ $labels.user }}}} holds on {{{{ $labels.node }}}} ({{{{ $labels.ip }}}}) "
            f"have been under {IDLE_PERCENT}% utilisation for 30 minutes"
        ),
        runbook=(
            "The user's task holds GPUs it does not use (stuck in data loading, a hung NCCL "
            "collective, waiting on a reward service, or done but not exiting). Find the task "
            "(`argus tasks --state RUNNING` as the admin, its node in `argus status TASK`), read its "
            "logs (`argus logs TASK`) and ask the user; cancel it if it is hung. Utilisation is "
            "Ray's per-node average, so on a shared node it covers every task there."
        ),
    ),
    Alert(
        name="SchedulerSlow",
        expr=_expr(
            """
            histogram_quantile(0.99, sum by (le) (rate(argus_scheduler_pass_seconds_bucket[5m]))) > 1
            """
        ),
        for_="5m",
        severity="warning",
        summary="Scheduler passes take more than 1s at the 99th percentile",
        runbook=(
            "Admission lags behind the queue. Check the database (slow queries, PostgreSQL "
            "load), the Ray state API's latency from the server (`ray list nodes`), and the queue "
            "depth (`argus queue`): a very deep queue makes every full pass longer."
        ),
    ),
)


def alert(name: str) -> Alert:
    """The alert named `name` (KeyError when there is none)."""
    for a in ALERTS:
        if a.name == name:
            return a
    raise KeyError(name)


def rules_document() -> dict[str, Any]:
    """`rules/argus.rules.yml` as data: one group with every alert."""
    return {"groups": [{"name": GROUP, "rules": [a.rule() for a in ALERTS]}]}


_LABEL_REF = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def expand(template: str, labels: Mapping[str, str]) -> str:
    """`template` with each `{{ $labels.NAME }}` replaced as Prometheus would (missing -> "")."""
    return _LABEL_REF.sub(lambda m: labels.get(m.group(1), ""), template)
