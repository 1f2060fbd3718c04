"""The Ray job tool (seed 000 §4): submit, status, stop, logs, list — Ray's Jobs SDK only.

Owns the one `JobSubmissionClient` (built lazily on first use, so constructing the tool never
touches the network), the translation of Ray's exceptions into `argus.cluster.errors`, and the
job's artifacts on shared storage (seed 000 §4.1):

    <job_root>/config/{ray_config.yaml,jobspec.yaml,submit_payload.json}
    <job_root>/logs/submit.out
    <job_root>/debug/{ray_status_pre,ray_job_list_post}.txt
    <job_root>/checkpoints/

Invariants: the submission id is always passed to Ray, so a retried submit can never start a
second copy of a job (Ray refuses a duplicate id). The job's directories are 0750 and its files
0640, whatever the umask: nothing of a job is readable by other users of the machine. No file
here carries an env_vars value of the TaskSpec (`jobspec.yaml` and `submit_payload.json` keep
the names, each value `<redacted>`), and `ray_job_list_post.txt` holds only this job's own
details as Ray reports them after the submit (its environment's values redacted), never other
jobs of the cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from argus.cluster.errors import ClusterError, ClusterUnavailable, JobNotFound, SubmissionRefused
from argus.domain.failure import Diagnosis, classify_failure
from argus.domain.paths import JOB_SUBDIRS
from argus.runtime.pool_shim import ensure_shim, shim_dir
from argus.spec.config import RayConfig
from argus.spec.redact import REDACTED, redact_runtime_env, redact_spec_text
from argus.spec.render import Rendered

LOG_TAIL_LINES = 200
STATE_TIMEOUT_S = 10  # Ray's state API (placement groups): one listing, never a request's whole budget
STATE_LIMIT = 10_000  # live placement groups listed at most
LIST_JOBS_EVERY_S = 60.0  # Ray's whole job list is read at most this often (`gpus_by_job`)
DIR_MODE = 0o750
FILE_MODE = 0o640


def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents with mode 0750 (whatever the umask); `path`
    itself is set to 0750 even when it existed."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(d, DIR_MODE)
    os.chmod(path, DIR_MODE)


def write_private(path: Path, text: str, mode: int = FILE_MODE) -> None:
    """Write `text` to `path` with `mode` (whatever the umask, and an older file's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, mode)
        f.write(text)


def _spec_env_names(spec_text: str) -> set[str]:
    """The names in the TaskSpec's env_vars (the user's environment)."""
    try:
        env = yaml.safe_load(spec_text).get("env_vars")
    except (yaml.YAMLError, AttributeError):
        return set()
    return {str(k) for k in env} if isinstance(env, dict) else set()


def redacted_payload(request: dict[str, Any], spec_text: str) -> dict[str, Any]:
    """The submission as written to `submit_payload.json`: each env var the TaskSpec set shows
    `<redacted>` for its value (those Argus and the cluster's config set are kept)."""
    names = _spec_env_names(spec_text)
    env = (request.get("runtime_env") or {}).get("env_vars")
    if not names or not isinstance(env, dict):
        return request
    return {
        **request,
        "runtime_env": {
            **request["runtime_env"],
            "env_vars": {k: REDACTED if k in names else v for k, v in env.items()},
        },
    }


def _plain(value: Any) -> Any:
    """Ray's JobDetails (a pydantic model) or a stand-in, as JSON-ready data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "__dict__"):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


@dataclass(frozen=True)
class JobView:
    """What Argus shows of one Ray job."""

    submission_id: str
    status: str
    message: str | None
    driver_node_id: str | None
    driver_node_ip: str | None
    error_type: str | None
    start_time: float | None
    end_time: float | None
    entrypoint: str | None
    metadata: dict[str, str]
    diagnosis: Diagnosis | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["diagnosis"] = (
            {"cause": self.diagnosis.cause.value, "evidence": self.diagnosis.evidence} if self.diagnosis else None
        )
        return d


def _now() -> datetime:
    return datetime.now(UTC)


def tail_lines(text: str, n: int | None) -> str:
    """The last `n` lines of `text` (all of it when n is None)."""
    if n is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-n:]) if n > 0 else ""


class RayJobTool:
    """Submit and follow verl jobs on one Ray cluster through `JobSubmissionClient`."""

    def __init__(
        self,
        config: RayConfig,
        client_factory: Callable[[str], Any] | None = None,
        clock: Callable[[], datetime] = _now,
    ):
        from argus.cluster.locate import HeadLocator

        self.config = config
        self.locator = HeadLocator(config)
        self._client_factory = client_factory
        self._client: Any = None  # a JobSubmissionClient, made on first use
        self._client_address: str | None = None
        self._clock = clock
        self._submission_of: dict[str, str] = {}  # Ray job id -> submission id, as seen
        self._listed_at = float("-inf")  # when Ray's whole job list was last read

    @property
    def address(self) -> str:
        """The dashboard URL in use now (followed through head.json when discovery is on).

        Raises:
            ClusterUnavailable: discovery is on and no live head is published.
        """
        return self.locator.current().dashboard_url

    # -- the SDK client -------------------------------------------------------------------
    @property
    def client(self):
        address = self.address
        if self._client is None or self._client_address != address:
            factory: Callable[[str], Any] | None = self._client_factory
            if factory is None:
                from ray.job_submission import JobSubmissionClient

                factory = JobSubmissionClient
            try:
                self._client = factory(address)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ClusterUnavailable(f"cannot reach the Ray job server at {address}: {exc}") from None
            self._client_address = address
        return self._client

    def _call(self, what: str, fn: Callable[[], Any], sid: str | None = None) -> Any:
        try:
            return fn()
        except ClusterError:
            raise
        except RuntimeError as exc:
            text = str(exc)
            if sid and ("does not exist" in text or "status code 404" in text.lower()):
                raise JobNotFound(f"no Ray job with submission id {sid}") from None
            if "already exists" in text:
                raise SubmissionRefused(text) from None
            raise ClusterUnavailable(f"{what} failed: {text}") from None
        except (ConnectionError, OSError) as exc:
            raise ClusterUnavailable(f"{what} failed: {exc}") from None

    # -- submit ---------------------------------------------------------------------------
    def submit(self, rendered: Rendered, spec_text: str) -> str:
        """Write the job's config artifacts, submit it, and record what happened.

        Returns:
            The submission id.
        Raises:
            SubmissionRefused: Ray refused it (the id exists already).
            ClusterUnavailable: Ray could not be reached.
        """
        root = Path(str(rendered.job_root))
        env = rendered.request.runtime_env.get("env_vars", {})
        if shim_dir(self.config.shared_root) in str(env.get("PYTHONPATH", "")).split(":"):
            ensure_shim(self.config.shared_root)  # a pool task's, or one with secrets
        make_private_dirs(root)
        for sub in JOB_SUBDIRS:
            make_private_dirs(root / sub)
        request = rendered.request.as_dict()
        cfg = root / "config"
        config = self.config.model_dump(mode="json")
        config["runtime_env"] = redact_runtime_env(config["runtime_env"])  # the operator's values
        write_private(cfg / "ray_config.yaml", yaml.safe_dump(config, sort_keys=False))
        write_private(cfg / "jobspec.yaml", redact_spec_text(spec_text))
        write_private(cfg / "submit_payload.json", json.dumps(redacted_payload(request, spec_text), indent=2) + "\n")
        write_private(root / "debug" / "ray_status_pre.txt", self._debug_text(self.cluster_summary))

        sid = rendered.submission_id
        log = [
            f"{self._clock().isoformat()} submit {sid} to {self.address}",
            f"entrypoint: {request['entrypoint']}",
        ]
        kwargs = {
            k: v
            for k, v in request.items()
            if not (k in ("entrypoint_num_gpus", "entrypoint_label_selector") and not v)
        }
        try:
            self._call("submit_job", lambda: self.client.submit_job(**kwargs))
        except Exception as exc:
            log.append(f"{self._clock().isoformat()} refused: {exc}")
            write_private(root / "logs" / "submit.out", "\n".join(log) + "\n")
            raise
        log.append(f"{self._clock().isoformat()} accepted: {sid}")
        write_private(root / "logs" / "submit.out", "\n".join(log) + "\n")
        write_private(root / "debug" / "ray_job_list_post.txt", self._debug_text(lambda: self.own_job_text(sid)))
        return sid

    def own_job_text(self, sid: str) -> str:
        """This job's details as Ray reports them (JSON), its environment's values redacted.

        Raises:
            JobNotFound, ClusterUnavailable: as `status`.
        """
        info = _plain(self._call("get_job_info", lambda: self.client.get_job_info(sid), sid))
        if isinstance(info, dict) and isinstance(info.get("runtime_env"), dict):
            info["runtime_env"] = redact_runtime_env(info["runtime_env"])
        return json.dumps(info, indent=2, sort_keys=True, default=str) + "\n"

    @staticmethod
    def _debug_text(fn: Callable[[], str]) -> str:
        try:
            return fn()
        except Exception as exc:  # debug snapshots never fail a submission
            return f"unavailable: {exc}\n"

    # -- read -----------------------------------------------------------------------------
    def status(self, sid: str, diagnose: bool = True) -> JobView:
        """Ray's view of the job; a failed job carries its diagnosed cause."""
        info = self._call("get_job_info", lambda: self.client.get_job_info(sid), sid)
        self._remember(info)
        view = self._view(info)
        if diagnose and view.status == "FAILED":
            try:
                tail = tail_lines(self.logs(sid), LOG_TAIL_LINES)
            except Exception:
                tail = ""
            diag = classify_failure(view.status, view.message, tail, view.error_type)
            view = JobView(**{**view.__dict__, "diagnosis": diag})
        return view

    @staticmethod
    def _view(info: Any) -> JobView:
        driver = getattr(info, "driver_info", None)
        error_type = getattr(info, "error_type", None)
        return JobView(
            submission_id=info.submission_id,
            status=str(getattr(info.status, "value", info.status)),
            message=info.message,
            driver_node_id=getattr(info, "driver_node_id", None),
            driver_node_ip=getattr(driver, "node_ip_address", None) if driver else None,
            error_type=str(getattr(error_type, "value", error_type)) if error_type else None,
            start_time=(info.start_time / 1000) if info.start_time else None,
            end_time=(info.end_time / 1000) if info.end_time else None,
            entrypoint=info.entrypoint,
            metadata=dict(info.metadata or {}),
        )

    def list(self) -> list[JobView]:
        """Every submission-type job Ray knows, newest first."""
        jobs = self._call("list_jobs", lambda: self.client.list_jobs())
        views = [self._view(j) for j in jobs if getattr(j, "submission_id", None)]
        return sorted(views, key=lambda v: v.start_time or 0, reverse=True)

    def list_text(self) -> str:
        rows = [f"{v.submission_id}\t{v.status}\t{v.driver_node_id or '-'}" for v in self.list()]
        return "submission_id\tstatus\tdriver_node_id\n" + "\n".join(rows) + "\n"

    def stop(self, sid: str) -> bool:
        """Ask Ray to stop the job; False when it had already ended."""
        return bool(self._call("stop_job", lambda: self.client.stop_job(sid), sid))

    def logs(self, sid: str, tail: int | None = None) -> str:
        text = self._call("get_job_logs", lambda: self.client.get_job_logs(sid), sid)
        return tail_lines(text, tail)

    def follow(self, sid: str) -> Iterator[str]:
        """Yield log chunks as they are written, until the job ends."""
        self.status(sid, diagnose=False)  # JobNotFound before opening the stream
        queue: list[str] = []

        async def pump() -> None:
            async for chunk in self.client.tail_job_logs(sid):
                queue.append(chunk)

        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(pump())
            while not task.done():
                loop.run_until_complete(asyncio.wait({task}, timeout=0.2))
                while queue:
                    yield queue.pop(0)
            while queue:
                yield queue.pop(0)
            if task.exception():
                raise ClusterUnavailable(f"log stream of {sid} broke: {task.exception()}")
        finally:
            loop.close()

    def gpus_by_job(self) -> dict[str, dict[str, float]]:
        """Where each submitted job's GPUs are now, as Ray placed them: `{submission_id:
        {ray_node_id: gpus}}`, summed over the bundles of the job's live (CREATED) placement
        groups. A job holding no GPU in a placement group (not started yet, or a driver's own
        GPU only) is left out.

        Raises:
            ClusterUnavailable: Ray's state API or job server cannot be read.
        """
        from ray.util.state import list_placement_groups

        pgs = self._state(
            "list_placement_groups",
            lambda: list_placement_groups(
                address=self.address,
                filters=[("state", "=", "CREATED")],
                limit=STATE_LIMIT,
                timeout=STATE_TIMEOUT_S,
                detail=True,
            ),
        )
        by_ray_job: dict[str, dict[str, float]] = {}
        for pg in pgs:
            for bundle in pg.bundles or []:
                gpus = float((bundle.get("unit_resources") or {}).get("GPU") or 0)
                node = bundle.get("node_id")
                if gpus > 0 and node and pg.creator_job_id:
                    held = by_ray_job.setdefault(str(pg.creator_job_id).lower(), {})
                    held[node] = held.get(node, 0.0) + gpus
        if not by_ray_job:
            return {}
        unknown = set(by_ray_job) - set(self._submission_of)
        if unknown and self._clock().timestamp() - self._listed_at >= LIST_JOBS_EVERY_S:
            # Jobs whose status was never read here: Ray's job list, at most once a minute (a
            # long history makes it a heavy call on the dashboard).
            self._listed_at = self._clock().timestamp()
            for j in self._call("list_jobs", lambda: self.client.list_jobs()):
                self._remember(j)
        return {self._submission_of[job]: held for job, held in by_ray_job.items() if job in self._submission_of}

    def _remember(self, info: Any) -> None:
        """Keep a job's Ray job id -> submission id (both never change)."""
        ray_job, sid = str(getattr(info, "job_id", None) or "").lower(), getattr(info, "submission_id", None)
        if ray_job and sid:
            if len(self._submission_of) > 100_000:
                self._submission_of.clear()
            self._submission_of[ray_job] = sid

    def _state(self, what: str, fn: Callable[[], Any]) -> Any:
        """A call of Ray's state API, its errors translated as `_call`'s."""
        from ray.util.state.exception import RayStateApiException

        try:
            return self._call(what, fn)
        except RayStateApiException as exc:
            raise ClusterUnavailable(f"{what} failed: {exc}") from None

    def cluster_summary(self) -> str:
        """Nodes and their resources, and the placement groups holding GPUs."""
        from ray.util.state import list_nodes, list_placement_groups

        nodes = self._call("list_nodes", lambda: list_nodes(address=self.address, detail=True))
        lines = [
            f"cluster at {self._client_address or self.config.address}, as seen {self._clock().isoformat()}",
            "",
        ]
        for n in sorted(nodes, key=lambda n: (not n.is_head_node, n.node_ip)):
            res = {k: v for k, v in (n.resources_total or {}).items() if not k.startswith("node:")}
            res.pop("memory", None)
            res.pop("object_store_memory", None)
            role = "head" if n.is_head_node else "worker"
            lines.append(f"{n.node_id} {n.node_ip} {role} {n.state} {json.dumps(res, sort_keys=True)}")
        pgs = self._call("list_placement_groups", lambda: list_placement_groups(address=self.address, detail=True))
        live = [p for p in pgs if p.state not in ("REMOVED",)]
        lines += ["", f"placement groups ({len(live)} live):"]
        for p in live:
            lines.append(f"  {p.placement_group_id} {p.state} {json.dumps(p.bundles)}")
        return "\n".join(lines) + "\n"
