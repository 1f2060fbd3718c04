"""The files `argus monitoring render` writes for a deployment, as text (no I/O here).

Owns `RenderOptions` (checked: the server URL, the scrape interval), `render(opts)` -> {relative
path: text} and the file layout:

- `prometheus.yml`: job `argus` scrapes the server's `/metrics` and job `ray` every alive Ray
  node's metrics endpoint, discovered through the server's `/api/v2/monitoring/ray-targets`
  (Prometheus http_sd). Both requests to the server carry the bearer token Prometheus reads from
  `token_file` (the admin or the metrics-only token, written there by the operator); the Ray
  nodes get no token. No token is ever written into these files.
- `rules/argus.rules.yml` and its promtool unit tests `rules/argus.rules.test.yml`;
- `grafana/dashboards/{cluster,users,nodes,task}.json` and Grafana's provisioning files
  `grafana/provisioning/{datasources,dashboards}/argus.yml`.

Relative paths in prometheus.yml are resolved by Prometheus against the file's own directory,
so a token file inside the output directory is named relative to it and the directory can move.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from argus.monitoring.dashboards import DASHBOARDS
from argus.monitoring.grafana import DATASOURCE_UID, dashboard_json
from argus.monitoring.rule_tests import TESTS_FILE, tests_document
from argus.monitoring.rules import RULES_FILE, rules_document
from argus.spec.errors import Problem, SpecError

SOURCE = "argus monitoring render"
METRICS_PATH = "/metrics"
RAY_TARGETS_PATH = "/api/v2/monitoring/ray-targets"
DEFAULT_TOKEN_FILE = PurePosixPath("secrets/argus_token")
PROMETHEUS_FILE = "prometheus.yml"
RULES_DIR = "rules"
DASHBOARDS_DIR = "grafana/dashboards"
DATASOURCES_FILE = "grafana/provisioning/datasources/argus.yml"
PROVIDERS_FILE = "grafana/provisioning/dashboards/argus.yml"
HEADER = "# Written by `argus monitoring render`; render again rather than edit. It holds no token.\n"

# Prometheus's duration syntax (without the 0 that means "unset").
_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")


@dataclass(frozen=True)
class Server:
    """Where Prometheus reaches the Argus server: scheme, host:port and any path prefix."""

    scheme: str
    address: str
    prefix: str

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}{self.prefix}"


def parse_server(url: str) -> Server:
    """The server URL split for Prometheus (the port defaults to the scheme's).

    Raises:
        SpecError: not an http(s) URL with a host, or it has a query, fragment or credentials.
    """
    problems = []
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise SpecError(SOURCE, [Problem("--server", f"{url!r} is not a URL: {exc}")]) from exc
    if parts.scheme not in ("http", "https"):
        problems.append(Problem("--server", f"{url!r} must start with http:// or https://"))
    if not parts.hostname:
        problems.append(Problem("--server", f"{url!r} names no host"))
    if parts.username or parts.password:
        problems.append(Problem("--server", "must not hold credentials: Prometheus reads the token from --token-file"))
    if parts.query or parts.fragment:
        problems.append(Problem("--server", f"{url!r} must have no query or fragment"))
    if problems:
        raise SpecError(SOURCE, problems)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = port or (443 if parts.scheme == "https" else 80)
    return Server(parts.scheme, f"{host}:{port}", parts.path.rstrip("/"))


def check_duration(value: str, field: str) -> str:
    """`value` when it is a Prometheus duration such as 15s, 1m or 1m30s.

    Raises:
        SpecError: it is not one, or it is zero.
    """
    if not value or not _DURATION.match(value) or not re.search(r"[1-9]", value):
        raise SpecError(SOURCE, [Problem(field, f"{value!r} is not a Prometheus duration such as 15s, 1m or 1m30s")])
    return value


@dataclass(frozen=True)
class RenderOptions:
    """What `render` needs. `out_dir` and `token_file` are absolute; `token_file` names the file
    Prometheus reads the bearer token from (inside `out_dir` or anywhere)."""

    out_dir: PurePath
    server_url: str
    token_file: PurePath
    scrape_interval: str = "15s"
    prometheus_url: str = "http://localhost:9090"

    def checked(self) -> tuple[Server, str]:
        """The parsed server and the token file's path as prometheus.yml names it.

        Raises:
            SpecError: every problem with the options.
        """
        problems: list[Problem] = []
        server = None
        try:
            server = parse_server(self.server_url)
        except SpecError as exc:
            problems.extend(exc.problems)
        try:
            check_duration(self.scrape_interval, "--scrape-interval")
        except SpecError as exc:
            problems.extend(exc.problems)
        if not self.prometheus_url.startswith(("http://", "https://")):
            problems.append(Problem("--prometheus-url", f"{self.prometheus_url!r} must start with http:// or https://"))
        if not self.out_dir.is_absolute() or not self.token_file.is_absolute():
            problems.append(Problem("--out", "the output directory and the token file must be absolute paths"))
        if problems or server is None:
            raise SpecError(SOURCE, problems)
        try:
            token = str(self.token_file.relative_to(self.out_dir))
        except ValueError:
            token = str(self.token_file)
        return server, token


def prometheus_config(server: Server, token_file: str, scrape_interval: str) -> dict[str, Any]:
    """prometheus.yml as data: the `argus` and `ray` jobs and the rules file."""
    auth = {"type": "Bearer", "credentials_file": token_file}
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [f"{RULES_DIR}/{RULES_FILE}"],
        "scrape_configs": [
            {
                "job_name": "argus",
                "scheme": server.scheme,
                "metrics_path": server.prefix + METRICS_PATH,
                "authorization": auth,
                "static_configs": [{"targets": [server.address]}],
            },
            {
                # Ray's metrics endpoints take no token: only the discovery request carries it.
                "job_name": "ray",
                "http_sd_configs": [
                    {"url": server.url + RAY_TARGETS_PATH, "refresh_interval": "30s", "authorization": auth}
                ],
                "relabel_configs": [
                    # The discovered node, pool, ray_node_id and ray_head labels stay on every
                    # series; a node without a pool gets "-", as in Argus's own series.
                    {"source_labels": ["pool"], "regex": "", "target_label": "pool", "replacement": "-"},
                ],
            },
        ],
    }


def grafana_datasource(prometheus_url: str, scrape_interval: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Argus Prometheus",
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
                "jsonData": {"timeInterval": scrape_interval},
            }
        ],
    }


def grafana_providers(dashboards_dir: PurePath) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "argus",
                "orgId": 1,
                "folder": "Argus",
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": str(dashboards_dir), "foldersFromFilesStructure": False},
            }
        ],
    }


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases, which some readers of these files do not expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(data: dict[str, Any]) -> str:
    return HEADER + yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, width=1000, allow_unicode=True)


def render(opts: RenderOptions) -> dict[str, str]:
    """Every file, by its path relative to `opts.out_dir`.

    Raises:
        SpecError: the options are invalid (each problem names its option).
    """
    server, token_file = opts.checked()
    files = {
        PROMETHEUS_FILE: _yaml(prometheus_config(server, token_file, opts.scrape_interval)),
        f"{RULES_DIR}/{RULES_FILE}": _yaml(rules_document()),
        f"{RULES_DIR}/{TESTS_FILE}": _yaml(tests_document()),
        DATASOURCES_FILE: _yaml(grafana_datasource(opts.prometheus_url, opts.scrape_interval)),
        PROVIDERS_FILE: _yaml(grafana_providers(opts.out_dir / DASHBOARDS_DIR)),
    }
    for name, d in DASHBOARDS.items():
        files[f"{DASHBOARDS_DIR}/{name}.json"] = json.dumps(dashboard_json(d), indent=2) + "\n"
    return files
