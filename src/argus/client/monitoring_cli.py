"""`argus monitoring render`: write Prometheus's config, Argus's alert rules (with their promtool
tests) and the Grafana dashboards for a deployment.

Owns the command's options, where the server URL comes from (`--server`, else `$ARGUS_URL`, else
the URL `argus login` saved: the same order as every other command) and the writing: files under
`--out`, and the token file's directory (mode 0700) when it is missing. What the files say is
`argus.monitoring`'s. The command never reads or writes a token: the operator writes the admin
or the metrics-only token (`service.metrics_token_env`, `ARGUS_METRICS_TOKEN` by default) into
the token file, mode 0600. Exit codes: 0 written, 2 bad input (each problem names its option).
`register(app)` adds the `monitoring` group to the main Typer app.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from argus.client.sdk import CredentialsError, load_credentials
from argus.monitoring.render import DEFAULT_TOKEN_FILE, PROMETHEUS_FILE, RenderOptions, render
from argus.spec.errors import SpecError

monitoring_app = typer.Typer(no_args_is_help=True, help="Prometheus, alert rules and Grafana dashboards for Argus.")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail_input(problems: list[tuple[str, str]]) -> NoReturn:
    err.print("[bold red]error:[/] argus monitoring render: invalid input:")
    for name, reason in problems:
        err.print(f"  - [bold]{escape(name)}[/]: {escape(reason)}")
    raise typer.Exit(2)


def server_url(given: str | None) -> str | None:
    """`given`, else `$ARGUS_URL`, else the saved login's URL (None when there is none)."""
    try:  # the token is not needed here: Prometheus reads its own from the token file
        return load_credentials(url=given, token="unused").url
    except CredentialsError:
        return None


def write_files(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Write each file under `out_dir` (directories made as needed); the paths written."""
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


@monitoring_app.command("render")
def render_cmd(
    out_dir: Path = typer.Option(..., "--out", "-o", help="directory to write into (made if missing)"),
    server: str | None = typer.Option(
        None, "--server", help="the Argus server's URL as Prometheus reaches it (else $ARGUS_URL, else the saved login)"
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="file Prometheus reads the bearer token from (default OUT/secrets/argus_token); "
        "write the admin or metrics token there yourself, mode 0600",
    ),
    scrape_interval: str = typer.Option("15s", "--scrape-interval", help="Prometheus scrape and evaluation interval"),
    prometheus_url: str = typer.Option(
        "http://localhost:9090", "--prometheus-url", help="where Grafana reaches Prometheus (its data source)"
    ),
) -> None:
    """Write prometheus.yml, rules/ (alerts and their promtool tests) and grafana/ under OUT."""
    url = server_url(server)
    if not url:
        _fail_input([("--server", "no server URL given, in $ARGUS_URL or in a saved login (`argus login`)")])
    out_abs = out_dir.expanduser().absolute()
    token = (token_file.expanduser().absolute()) if token_file else out_abs / DEFAULT_TOKEN_FILE
    opts = RenderOptions(out_abs, url, token, scrape_interval, prometheus_url)
    try:
        files = render(opts)
    except SpecError as exc:
        _fail_input([(p.field, p.reason) for p in exc.problems])
    for path in write_files(out_abs, files):
        out.print(f"wrote {escape(str(path))}")
    if not token.parent.exists():
        token.parent.mkdir(parents=True, mode=0o700)
        os.chmod(token.parent, 0o700)
    _token_note(token)
    out.print(f"then: prometheus --config.file={escape(str(out_abs / PROMETHEUS_FILE))}")


def _token_note(token: Path) -> None:
    """Tell the operator what the token file must hold, and warn when others can read it."""
    if not token.exists():
        out.print(
            f"[yellow]next:[/] write the admin token or the metrics token ($ARGUS_METRICS_TOKEN of the server) "
            f"into {escape(str(token))}, mode 0600; Prometheus reads it on every scrape"
        )
        return
    mode = stat.S_IMODE(token.stat().st_mode)
    if mode & 0o077:
        err.print(f"[yellow]warning:[/] {escape(str(token))} is readable by others (mode {mode:o}); chmod 600 it")
    else:
        out.print(f"token file: {escape(str(token))} (left as it is)")


def register(app: typer.Typer) -> None:
    app.add_typer(monitoring_app, name="monitoring")
