"""Prometheus, live, on what `argus monitoring render` wrote: a real `argus server` over the real
local Ray cluster running a task, and a real Prometheus (its own port and data dir) scraping
both. After a few scrapes the `argus` target and Ray node targets (found through the server's
http_sd endpoint) are up, every series name the rules and dashboards read from the server is
served, every alert rule evaluates without error, and the PromQL of every dashboard panel (and
of every template variable) returns at least one series.

These machines have no GPU, so Ray exports no GPU series. A small HTTP server in this test,
`GpuStandIn`, stands in for GPU hardware: it serves `ray_node_gpus_utilization` (1 %) and
`ray_node_gram_used` for a real node IP of the cluster, and the test (only) adds it to the
rendered prometheus.yml as one more scrape job. With it, the idle-GPU alert's join of Argus's
allocation and Ray's utilisation is seen live: GpuIdle goes pending for the task's user.

Run under the shared lock: `flock /tmp/argus-ray-tests.lock .venv/bin/python -m pytest -q
tests/ray/test_monitoring_on_ray.py`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from argus.client.cli import app
from argus.cluster import local
from argus.monitoring.dashboards import DASHBOARDS
from argus.monitoring.names import ARGUS_SERIES
from argus.monitoring.rules import ALERTS
from argus.testing.sandbox import task_yaml
from argus.testing.server import ServerProcess, free_port, user_client, wait_state

pytestmark = pytest.mark.ray
ADMIN = "monitoring-admin-token"
USER = "monwatch"
GRAFANA_RANGES = {"__range": "10m", "__rate_interval": "1m", "__interval": "1s"}


class GpuStandIn:
    """Stands in for GPU hardware: a Prometheus endpoint serving the GPU series Ray's agent
    would export for one node IP (utilisation 1 %, i.e. idle; 2 GiB used)."""

    def __init__(self, ip: str):
        body = (
            "# TYPE ray_node_gpus_utilization gauge\n"
            f'ray_node_gpus_utilization{{ip="{ip}",GpuIndex="0"}} 1\n'
            "# TYPE ray_node_gram_used gauge\n"
            f'ray_node_gram_used{{ip="{ip}",GpuIndex="0"}} 2048\n'
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    """A real Prometheus on `config`, on a free port, with a data dir of its own."""

    def __init__(self, config: Path, workdir: Path):
        exe = shutil.which("prometheus")
        assert exe, "prometheus is not installed: `make venv` installs Debian's prometheus package"
        self.port = free_port(19090)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def api(self, path: str, **params: str) -> Any:
        answer = self.http.get(f"/api/v1/{path}", params=params).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def wait(self, what: str, ok, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log.read_text()[-3000:]}"
            try:
                last = ok()
                if last:
                    return last
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"{what} not seen in {timeout}s; last: {last}\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server(idle_cluster, tmp_path) -> Iterator[ServerProcess]:
    work = tmp_path / "server"
    work.mkdir()
    srv = ServerProcess(local.config_file(idle_cluster.shared_root), work, ADMIN)
    srv.start()
    yield srv
    srv.stop()


def substitute(expr: str, values: dict[str, str]) -> str:
    """`expr` as Grafana would send it: `$name` replaced by the variable's (single) value."""
    return re.sub(r"\$(\w+)", lambda m: values[m.group(1)], expr)


def test_prometheus_on_the_rendered_config_sees_argus_and_ray_and_every_panel_has_data(server, sandbox, tmp_path):
    client = user_client(server.url, ADMIN, USER)
    spec = task_yaml(
        sandbox, "ppo", n_gpus_per_node=1, total_training_steps=400, save_freq=-1,
        env_vars={"VERL_SIM_STEP_SECONDS": "0.5"},
    )  # fmt: skip
    tid = client.submit(spec)["task_id"]
    wait_state(client, tid, {"RUNNING"}, timeout=90)

    out = tmp_path / "monitoring"
    rendered = CliRunner().invoke(
        app, ["monitoring", "render", "--out", str(out), "--server", server.url, "--scrape-interval", "1s"]
    )
    assert rendered.exit_code == 0, rendered.output
    token = out / "secrets" / "argus_token"
    token.write_text(ADMIN + "\n")
    token.chmod(0o600)

    auth = {"Authorization": f"Bearer {ADMIN}"}
    targets = httpx.get(f"{server.url}/api/v2/monitoring/ray-targets", headers=auth).json()
    assert [t for t in targets if t["labels"]["ray_head"] == "false"], targets
    # The stand-in's GPUs are on the node IP where the task holds its GPUs, as the server says.
    families = text_string_to_metric_families(httpx.get(f"{server.url}/metrics", headers=auth).text)
    held_at = [
        s.labels
        for f in families
        if f.name == "argus_node_gpus_allocated"
        for s in f.samples
        if s.labels["user"] == USER and s.value > 0
    ]
    assert held_at, f"no argus_node_gpus_allocated for {USER}"
    node_ip = held_at[0]["ip"]

    gpus = GpuStandIn(node_ip)
    config = yaml.safe_load((out / "prometheus.yml").read_text())
    config["scrape_configs"].append(
        {"job_name": "gpu-hardware-stand-in", "static_configs": [{"targets": [gpus.address]}]}
    )
    (out / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    prom = Prometheus(out / "prometheus.yml", tmp_path)
    try:
        # Two scrapes at least of every target, the Argus server's and the Ray nodes' up.
        prom.wait(
            "the argus target up after 3 scrapes",
            lambda: prom.query('count_over_time(up{job="argus"}[1m]) >= 3 and up{job="argus"} == 1'),
        )
        active = prom.wait(
            "a Ray node target up",
            lambda: [
                t for t in prom.api("targets")["activeTargets"] if t["labels"]["job"] == "ray" and t["health"] == "up"
            ],
        )
        assert {t["labels"]["node"] for t in active} <= {t["labels"]["node"] for t in targets}
        assert all(t["labels"]["pool"] for t in active)
        jobs = {t["labels"]["job"]: t for t in prom.api("targets")["activeTargets"]}
        assert jobs["argus"]["health"] == "up", jobs["argus"]
        prom.wait("two scrapes of the Ray nodes", lambda: prom.query('count_over_time(up{job="ray"}[1m]) >= 2'))

        served = {r["metric"]["__name__"] for r in prom.query('group by (__name__) ({job="argus"})')}
        assert ARGUS_SERIES - served == set()

        held = prom.wait(f"{USER}'s allocation", lambda: prom.query(f'argus_node_gpus_allocated{{user="{USER}"}} > 0'))[
            0
        ]["metric"]
        values = {
            **GRAFANA_RANGES,
            "user": USER,
            "node": held["node"],
            "pool": held["pool"],
            "workload": "ppo",
        }
        empty = {}
        for name, d in DASHBOARDS.items():
            for v in d.variables:  # label_values(SELECTOR, LABEL): some series of SELECTOR has LABEL
                parsed = re.fullmatch(r"label_values\((.+), (\w+)\)", v.query)
                assert parsed, v.query
                selector, label = parsed.groups()
                if not [r for r in prom.query(substitute(selector, values)) if label in r["metric"]]:
                    empty[f"{name}: variable {v.name}"] = v.query
            for title, expr in d.exprs():
                query = substitute(expr, values)
                if not prom.query(query):
                    empty[f"{name}: {title}"] = query
        assert empty == {}

        groups = prom.api("rules")["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        assert set(rules) == {a.name for a in ALERTS}
        assert {n: r["health"] for n, r in rules.items()} == {a.name: "ok" for a in ALERTS}, rules
        # The idle-GPU join on live series: Argus's allocation x the stand-in's 1 % utilisation.
        idle = prom.wait(
            "GpuIdle pending",
            lambda: [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == "GpuIdle"],
        )
        assert idle[0]["state"] == "pending" and idle[0]["labels"]["user"] == USER
        assert idle[0]["labels"]["ip"] == node_ip and idle[0]["labels"]["node"] == held["node"]
        firing = [a["labels"]["alertname"] for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
        assert firing == []
    finally:
        prom.stop()
        gpus.close()
        client.cancel(tid)
