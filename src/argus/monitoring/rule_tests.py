"""promtool unit tests for Argus's alerts: each fires on synthetic series, and stays quiet on
healthy ones (the GPU-idle alert included, since it cannot be seen live without GPUs).

Owns `CASES` and `tests_document()`, the `rules/argus.rules.test.yml` content that
`promtool test rules` runs. The expected annotations are the alert's own templates expanded with
the expected labels, so a changed summary needs no second edit here; a changed expression or
label set does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from argus.monitoring.rules import ALERTS, RULES_FILE, alert, expand

TESTS_FILE = "argus.rules.test.yml"
ARGUS = {"job": "argus", "instance": "argus:8080"}


def series(metric: str, values: str, **labels: str) -> tuple[str, str]:
    """One input series: `metric{labels}` and its values in promtool's notation ('1x10', '0+5x20')."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return (f"{metric}{{{inner}}}", values)


@dataclass(frozen=True)
class Case:
    """Input series and, at `eval_time`, the label sets of the alerts expected to fire (none: quiet)."""

    alert: str
    name: str
    series: tuple[tuple[str, str], ...]
    eval_time: str
    fires: tuple[Mapping[str, str], ...] = field(default=())


W1 = {"node": "w1", "ip": "10.0.0.1", "pool": "h20"}
W2 = {"node": "w2", "ip": "10.0.0.2", "pool": "h20"}
W3 = {"node": "w3", "ip": "10.0.0.3", "pool": "-"}


def _slow_buckets(growth: Mapping[str, int]) -> tuple[tuple[str, str], ...]:
    return tuple(series("argus_scheduler_pass_seconds_bucket", f"0+{n}x20", le=le, **ARGUS) for le, n in growth.items())


CASES: tuple[Case, ...] = (
    # -- ArgusDown --
    Case("ArgusDown", "scrape fails", (series("up", "0x10", **ARGUS),), "5m", (ARGUS,)),
    Case(
        "ArgusDown",
        "no argus target at all",
        (series("up", "1x10", job="ray", instance="r:1"),),
        "5m",
        ({"job": "argus"},),
    ),
    Case("ArgusDown", "healthy", (series("up", "1x10", **ARGUS),), "5m"),
    Case("ArgusDown", "down for less than its `for`", (series("up", "0x10", **ARGUS),), "1m"),
    # -- SchedulerProcessDown --
    Case("SchedulerProcessDown", "down", (series("argus_scheduler_process_up", "0x10", **ARGUS),), "5m", (ARGUS,)),
    Case("SchedulerProcessDown", "running", (series("argus_scheduler_process_up", "1x10", **ARGUS),), "5m"),
    Case(
        "SchedulerProcessDown",
        "restarted once within its `for`",
        (
            series("argus_scheduler_process_up", "1 0 1x8", **ARGUS),
            series("argus_scheduler_process_restarts_total", "0 0 1x8", **ARGUS),
        ),
        "5m",
    ),
    Case(
        "SchedulerProcessDown",
        "up at every scrape, but started again each minute",
        (
            series("argus_scheduler_process_up", "1x15", **ARGUS),
            series("argus_scheduler_process_restarts_total", "0+1x15", **ARGUS),
        ),
        "10m",
        (ARGUS,),
    ),
    # -- RayHeadUnreachable --
    Case("RayHeadUnreachable", "ray down", (series("argus_ray_up", "0x10", **ARGUS),), "5m", (ARGUS,)),
    Case("RayHeadUnreachable", "healthy", (series("argus_ray_up", "1x10", **ARGUS),), "5m"),
    # -- HeadRecordStale --
    Case(
        "HeadRecordStale",
        "record ages",
        (series("argus_head_record_age_seconds", "100+60x10", **ARGUS),),
        "5m",
        (ARGUS,),
    ),
    Case("HeadRecordStale", "fresh record", (series("argus_head_record_age_seconds", "3x10", **ARGUS),), "5m"),
    Case("HeadRecordStale", "no record (-1)", (series("argus_head_record_age_seconds", "-1x10", **ARGUS),), "5m"),
    # -- NodeLostWithTasks --
    Case(
        "NodeLostWithTasks",
        "a node down with GPUs held, another gone from Ray with GPUs held",
        (
            series("argus_node_up", "0x10", **W1, **ARGUS),
            series("argus_node_gpus_allocated", "4x10", **W1, user="alice", **ARGUS),
            series("argus_node_gpus_allocated", "2x10", **W2, user="bob", **ARGUS),
        ),
        "5m",
        (W1, W2),
    ),
    Case(
        "NodeLostWithTasks",
        "a node down with nothing on it, a node up with GPUs held",
        (
            series("argus_node_up", "0x10", **W1, **ARGUS),
            series("argus_node_up", "1x10", **W2, **ARGUS),
            series("argus_node_gpus_allocated", "4x10", **W2, user="alice", **ARGUS),
        ),
        "5m",
    ),
    # -- SchedulerStuck --
    Case(
        "SchedulerStuck",
        "a waiting gang fits the free GPUs for 20 minutes",
        (series("argus_pending_fits_now", "2x30", pool="h20", **ARGUS),),
        "20m",
        ({"pool": "h20"},),
    ),
    Case(
        "SchedulerStuck",
        "gangs that do not fit the free GPUs per node: waiting is right",
        (
            series("argus_pending_fits_now", "0x30", pool="h20", **ARGUS),
            series("argus_pending_tasks", "3x30", pool="h20", reason="Resources", **ARGUS),
        ),
        "20m",
    ),
    Case(
        "SchedulerStuck",
        "a gang fits for less than 15 minutes (the next passes start it)",
        (series("argus_pending_fits_now", "0x5 1x10 0x15", pool="h20", **ARGUS),),
        "20m",
    ),
    # -- GpuIdle --
    Case(
        "GpuIdle",
        "alice holds 4 GPUs on w1 whose utilisation stays near 2%",
        (
            series("argus_node_gpus_allocated", "4x40", **W1, user="alice", **ARGUS),
            series("ray_node_gpus_utilization", "1x40", ip=W1["ip"], GpuIndex="0", job="ray", instance="10.0.0.1:9000"),
            series("ray_node_gpus_utilization", "3x40", ip=W1["ip"], GpuIndex="1", job="ray", instance="10.0.0.1:9000"),
        ),
        "35m",
        ({**W1, "user": "alice"},),
    ),
    Case(
        "GpuIdle",
        "held GPUs busy, an idle node holds no Argus task",
        (
            series("argus_node_gpus_allocated", "4x40", **W1, user="alice", **ARGUS),
            series(
                "ray_node_gpus_utilization", "80x40", ip=W1["ip"], GpuIndex="0", job="ray", instance="10.0.0.1:9000"
            ),
            series("ray_node_gpus_utilization", "0x40", ip=W2["ip"], GpuIndex="0", job="ray", instance="10.0.0.2:9000"),
        ),
        "35m",
    ),
    Case(
        "GpuIdle",
        "idle for 20 minutes only",
        (
            series("argus_node_gpus_allocated", "4x40", **W1, user="alice", **ARGUS),
            series("ray_node_gpus_utilization", "1x40", ip=W1["ip"], GpuIndex="0", job="ray", instance="10.0.0.1:9000"),
        ),
        "20m",
    ),
    # -- SchedulerSlow --
    Case(
        "SchedulerSlow",
        "passes take 1-2.5s",
        _slow_buckets({"0.1": 0, "1": 0, "2.5": 10, "+Inf": 10}),
        "10m",
        ({},),
    ),
    Case("SchedulerSlow", "passes take under 0.1s", _slow_buckets({"0.1": 10, "1": 10, "2.5": 10, "+Inf": 10}), "10m"),
)


def _expected(case: Case) -> list[dict[str, Any]]:
    a = alert(case.alert)
    out = []
    for labels in case.fires:
        exp = {**labels, "severity": a.severity}
        out.append({"exp_labels": exp, "exp_annotations": {k: expand(v, exp) for k, v in a.annotations().items()}})
    return out


def tests_document() -> dict[str, Any]:
    """`rules/argus.rules.test.yml` as data: one promtool test per case, each alert checked."""
    tests = []
    for case in CASES:
        tests.append(
            {
                "name": f"{case.alert}: {case.name}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series],
                "alert_rule_test": [
                    {"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": _expected(case)}
                ],
            }
        )
    return {"rule_files": [RULES_FILE], "evaluation_interval": "1m", "tests": tests}


def untested() -> list[str]:
    """Alerts with no firing case or no quiet case (the unit tests want none)."""
    missing = []
    for a in ALERTS:
        cases = [c for c in CASES if c.alert == a.name]
        if not any(c.fires for c in cases) or not any(not c.fires for c in cases):
            missing.append(a.name)
    return missing
