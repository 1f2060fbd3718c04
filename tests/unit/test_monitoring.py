"""`argus monitoring render` and what it writes: the files, Prometheus's own checks of them
(`promtool check config`, `check rules`, `test rules`: every alert fires on synthetic series and
stays quiet on healthy ones), the alerts' annotations, and the series the rules and dashboards
read (each an `argus_*` series the server serves, or one of Ray's or Prometheus's by name).

promtool is Debian's `prometheus` package, which `make venv` installs.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from argus.client.cli import app
from argus.monitoring.dashboards import DASHBOARDS
from argus.monitoring.grafana import DATASOURCE_UID
from argus.monitoring.names import ALL_SERIES
from argus.monitoring.rule_tests import CASES, untested
from argus.monitoring.rules import ALERTS

SECRET = "s3cr3t-token-that-must-not-appear"
FILES = {
    "prometheus.yml",
    "rules/argus.rules.yml",
    "rules/argus.rules.test.yml",
    "grafana/dashboards/cluster.json",
    "grafana/dashboards/users.json",
    "grafana/dashboards/nodes.json",
    "grafana/dashboards/task.json",
    "grafana/provisioning/datasources/argus.yml",
    "grafana/provisioning/dashboards/argus.yml",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed: `make venv` installs Debian's prometheus package"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def render(out: Path, *extra: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["monitoring", "render", "--out", str(out), *extra], env=env)


@pytest.fixture
def rendered(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ARGUS_TOKEN", SECRET)  # in reach of the command: it must not use it
    out = tmp_path / "mon"
    result = render(out, "--server", "http://argus.internal:8080")
    assert result.exit_code == 0, result.output
    assert "secrets/argus_token" in result.output and "mode 0600" in result.output
    return out


def test_render_writes_every_file_and_no_token(rendered):
    written = {str(p.relative_to(rendered)) for p in rendered.rglob("*") if p.is_file()}
    assert written == FILES
    for rel in FILES:
        assert SECRET not in (rendered / rel).read_text()
    secrets_dir = rendered / "secrets"
    assert secrets_dir.is_dir() and stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert not (secrets_dir / "argus_token").exists()  # the operator writes it


def test_prometheus_config_scrapes_the_server_and_discovers_ray_nodes_through_it(rendered):
    cfg = yaml.safe_load((rendered / "prometheus.yml").read_text())
    assert cfg["global"] == {"scrape_interval": "15s", "evaluation_interval": "15s"}
    assert cfg["rule_files"] == ["rules/argus.rules.yml"]
    argus, ray = cfg["scrape_configs"]
    auth = {"type": "Bearer", "credentials_file": "secrets/argus_token"}
    assert argus == {
        "job_name": "argus",
        "scheme": "http",
        "metrics_path": "/metrics",
        "authorization": auth,
        "static_configs": [{"targets": ["argus.internal:8080"]}],
    }
    assert ray["job_name"] == "ray" and "authorization" not in ray  # Ray's agents get no token
    assert ray["http_sd_configs"] == [
        {
            "url": "http://argus.internal:8080/api/v2/monitoring/ray-targets",
            "refresh_interval": "30s",
            "authorization": auth,
        }
    ]
    assert {"source_labels": ["pool"], "regex": "", "target_label": "pool", "replacement": "-"} in ray[
        "relabel_configs"
    ]


def test_options_shape_the_config(tmp_path):
    token = tmp_path / "elsewhere" / "metrics.token"
    out = tmp_path / "m"
    result = render(
        out, "--server", "https://argus.example/prefix/", "--token-file", str(token), "--scrape-interval", "1s"
    )
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((out / "prometheus.yml").read_text())
    argus, ray = cfg["scrape_configs"]
    assert cfg["global"]["scrape_interval"] == "1s"
    assert argus["scheme"] == "https" and argus["metrics_path"] == "/prefix/metrics"
    assert argus["static_configs"] == [{"targets": ["argus.example:443"]}]
    assert argus["authorization"]["credentials_file"] == str(token)  # outside OUT: absolute
    assert ray["http_sd_configs"][0]["url"] == "https://argus.example:443/prefix/api/v2/monitoring/ray-targets"
    ds = yaml.safe_load((out / "grafana/provisioning/datasources/argus.yml").read_text())
    assert ds["datasources"][0]["uid"] == DATASOURCE_UID and ds["datasources"][0]["jsonData"]["timeInterval"] == "1s"
    providers = yaml.safe_load((out / "grafana/provisioning/dashboards/argus.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == str(out / "grafana/dashboards")


def test_server_url_comes_from_the_environment_or_the_saved_login(tmp_path):
    env = {"ARGUS_URL": "http://from-env:9000", "ARGUS_CONFIG_DIR": str(tmp_path / "cfg")}
    assert render(tmp_path / "a", env=env).exit_code == 0
    assert "from-env:9000" in (tmp_path / "a/prometheus.yml").read_text()
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg/credentials.json").write_text(json.dumps({"url": "http://saved:7000", "token": "t"}))
    assert render(tmp_path / "b", env={"ARGUS_URL": "", "ARGUS_CONFIG_DIR": str(tmp_path / "cfg")}).exit_code == 0
    text = (tmp_path / "b/prometheus.yml").read_text()
    assert "saved:7000" in text and '"t"' not in text


def test_bad_options_exit_2_naming_each(tmp_path):
    env = {"ARGUS_URL": "", "ARGUS_CONFIG_DIR": str(tmp_path / "none")}
    result = render(tmp_path / "x", env=env)
    assert result.exit_code == 2 and "--server: no server URL given" in result.output
    result = render(tmp_path / "x", "--server", "ftp://h", "--scrape-interval", "fast", env=env)
    assert result.exit_code == 2
    assert "--server: 'ftp://h' must start with http:// or https://" in result.output
    assert "--scrape-interval: 'fast' is not a Prometheus duration" in result.output
    result = render(tmp_path / "x", "--server", "http://user:pw@h:1", env=env)
    assert result.exit_code == 2 and "--server: must not hold credentials" in result.output
    assert not (tmp_path / "x").exists()


def test_promtool_checks_the_config_and_the_rules(rendered):
    cfg = str(rendered / "prometheus.yml")
    missing = promtool("check", "config", cfg)
    assert missing.returncode != 0 and "secrets/argus_token" in missing.stdout + missing.stderr
    assert promtool("check", "config", "--syntax-only", cfg).returncode == 0
    token = rendered / "secrets/argus_token"
    token.write_text("token-written-by-the-operator\n")
    token.chmod(0o600)
    ok = promtool("check", "config", cfg)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 rule files found" in ok.stdout
    rules = promtool("check", "rules", str(rendered / "rules/argus.rules.yml"))
    assert rules.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in rules.stdout, rules.stdout + rules.stderr


def test_promtool_unit_tests_fire_every_alert_and_keep_healthy_series_quiet(rendered):
    result = promtool("test", "rules", str(rendered / "rules/argus.rules.test.yml"))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    assert untested() == []
    doc = yaml.safe_load((rendered / "rules/argus.rules.test.yml").read_text())
    assert len(doc["tests"]) == len(CASES)
    fired = {t["alert_rule_test"][0]["alertname"] for t in doc["tests"] if t["alert_rule_test"][0]["exp_alerts"]}
    quiet = {t["alert_rule_test"][0]["alertname"] for t in doc["tests"] if not t["alert_rule_test"][0]["exp_alerts"]}
    assert fired == quiet == {a.name for a in ALERTS}


def test_the_unit_tests_catch_a_broken_alert(rendered, tmp_path):
    """The promtool tests are not vacuous: an idle threshold of 0.5% instead of 5% fails them."""
    rules = (rendered / "rules/argus.rules.yml").read_text()
    assert "(avg by (ip) (ray_node_gpus_utilization) < 5)" in rules
    (rendered / "rules/argus.rules.yml").write_text(
        rules.replace("ray_node_gpus_utilization) < 5", "ray_node_gpus_utilization) < 0.5")
    )
    result = promtool("test", "rules", str(rendered / "rules/argus.rules.test.yml"))
    assert result.returncode != 0 and "alertname: GpuIdle" in result.stdout + result.stderr


def test_every_alert_has_a_severity_summary_and_runbook(rendered):
    groups = yaml.safe_load((rendered / "rules/argus.rules.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert [r["alert"] for r in rules] == [
        "ArgusDown",
        "SchedulerProcessDown",
        "RayHeadUnreachable",
        "HeadRecordStale",
        "NodeLostWithTasks",
        "SchedulerStuck",
        "GpuIdle",
        "SchedulerSlow",
    ]
    for r in rules:
        assert set(r["annotations"]) == {"summary", "runbook"}, r["alert"]
        assert len(r["annotations"]["summary"]) > 20 and len(r["annotations"]["runbook"]) > 80, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning")
    by_name = {r["alert"]: r for r in rules}
    assert by_name["GpuIdle"]["for"] == "30m" and "user" in by_name["GpuIdle"]["expr"]
    assert by_name["SchedulerStuck"]["for"] == "15m"


# -- the series read ------------------------------------------------------------------------
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads: identifiers that are not functions,
    keywords, label names (in `{}` or a `by (...)`-like clause), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end() :].lstrip()
        if m.group() in _KEYWORDS or rest.startswith("("):
            continue
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] in ".$"):
            continue  # 1e3, 0.5, $var
        names.add(m.group())
    return names


def test_metric_names_parses_promql():
    assert metric_names('sum by (pool, state) (argus_gpus{pool=~"$pool"})') == {"argus_gpus"}
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="b c"}[5m]))) > 1 and on (ip) avg(y) < 5'
    ) == {"x_bucket", "y"}


def test_rules_and_dashboards_read_only_known_series():
    exprs = [(f"alert {a.name}", a.expr) for a in ALERTS] + [
        (f"{name}: {title}", expr) for name, d in DASHBOARDS.items() for title, expr in d.exprs()
    ]
    unknown = {where: sorted(metric_names(e) - ALL_SERIES) for where, e in exprs if metric_names(e) - ALL_SERIES}
    assert unknown == {}
    assert all(metric_names(e) for _, e in exprs)


def test_dashboards_are_grafana_json_on_the_provisioned_datasource(rendered):
    for name, d in DASHBOARDS.items():
        doc = json.loads((rendered / f"grafana/dashboards/{name}.json").read_text())
        assert doc["uid"] == d.uid and doc["title"].startswith("Argus / ")
        variables = {v["name"] for v in doc["templating"]["list"]}
        assert [p["id"] for p in doc["panels"]] == list(range(1, len(doc["panels"]) + 1))
        for p in doc["panels"]:
            assert p["datasource"]["uid"] == DATASOURCE_UID and p["targets"], p["title"]
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            used = set(re.findall(r"\$(\w+)", " ".join([p["title"], *(t["expr"] for t in p["targets"])])))
            assert used - {"__range", "__rate_interval"} <= variables, (name, p["title"])
    task = json.loads((rendered / "grafana/dashboards/task.json").read_text())
    assert "No Prometheus label holds a task id" in task["description"]
    assert {v["name"] for v in task["templating"]["list"]} == {"user", "pool", "node", "workload"}


def test_the_runbook_documents_every_alert():
    doc = (Path(__file__).parents[2] / "docs" / "monitoring.md").read_text()
    for a in ALERTS:
        assert f"### {a.name} ({a.severity}, {a.for_})" in doc, a.name
