"""Grafana's dashboard model, as far as Argus uses it, and its JSON.

Owns `Query`, `Panel`, `Variable` and `Dashboard` (plain data) and `dashboard_json(d)`, the JSON
model Grafana's file provisioning loads: panels laid out on Grafana's 24-column grid, every
query on the Prometheus data source `render` provisions (uid `DATASOURCE_UID`). What the
dashboards show is `dashboards`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE_UID = "argus-prometheus"
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel. `kind` is Grafana's panel type; `instant` panels show the value now (tables,
    stats over the dashboard's range)."""

    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    instant: bool = False
    stack: bool = False


@dataclass(frozen=True)
class Variable:
    """A query variable: its values are `label_values(...)` of a series."""

    name: str
    query: str
    label: str
    multi: bool = True

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": DATASOURCE,
            "definition": self.query,
            "query": {"query": self.query, "refId": f"var-{self.name}"},
            "refresh": 2,
            "multi": self.multi,
            "includeAll": self.multi,
            **({"allValue": ".*"} if self.multi else {}),
            "current": {},
            "sort": 1,
        }


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = field(default=())

    def exprs(self) -> list[tuple[str, str]]:
        """(panel title, PromQL) for every query of every panel."""
        return [(p.title, q.expr) for p in self.panels for q in p.queries]


def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    custom: dict[str, Any] = {"stacking": {"mode": "normal"}, "fillOpacity": 30} if p.stack else {}
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
        "fieldConfig": {"defaults": {"unit": p.unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend,
                "instant": p.instant,
                "range": not p.instant,
                **({"format": "table"} if p.kind == "table" else {}),
            }
            for i, q in enumerate(p.queries)
        ],
    }


def dashboard_json(d: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model; panels laid out left to right, row by row."""
    panels, x, y, row_h = [], 0, 0, 0
    for pid, p in enumerate(d.panels, start=1):
        if x + p.width > GRID_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        panels.append(_panel_json(p, pid, x, y))
        x, row_h = x + p.width, max(row_h, p.height)
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": ["argus"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "annotations": {"list": []},
        "templating": {"list": [v.json() for v in d.variables]},
        "panels": panels,
    }
