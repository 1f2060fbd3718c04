"""The two adapters of `argus.ports.RewardChecker`: where a reward function's check runs.

Owns running the check's script (`argus.runtime.reward_check`) where user code runs anyway,
never in the server process or with its environment:

- `RayRewardChecker`: a short Ray job (`argus-reward-check-<hex>`), its driver pinned to a
  worker exactly like a task's (`entrypoint_resources` from the RayConfig, the task's pool as a
  label selector), with a small CPU share; its status is polled until it ends or the check's
  time is up (then the job is stopped), and the verdict is read from its log.
- `LocalRewardChecker`: the same script as a subprocess of this machine, with the allow-list
  environment of a node's processes (`argus.cluster.nodeenv.node_env`: no admin token, no
  database URL, no `ARGUS_*`), an empty temporary working directory, killed (its whole process
  group) when the time is up. For fast tests over the fake Ray and offline validation.

Both give the script the job's import path (`PYTHONSAFEPATH=1`, `PYTHONPATH=<code_path>:<pool
shim dir>`) and the task's env_vars; secrets travel only in a fresh 0600 file under
`<shared_root>/users/<user>/.secrets/check-<hex>.json` named by `ARGUS_SECRETS_FILE`, removed
when the check ends. No secret value is put into an entrypoint, a runtime env, metadata or a
message: a verdict's error and a failure's log lines have every secret value replaced.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from argus.cluster.errors import ClusterError
from argus.cluster.jobs import RayJobTool
from argus.cluster.nodeenv import NODE_UMASK, node_env
from argus.cluster.secret_files import SECRETS_FILE_ENV, remove_secrets_file, write_secrets_file
from argus.domain.errors import Unavailable
from argus.domain.paths import secrets_file
from argus.domain.reward import FAKE_RESPONSE, RewardCheck, RewardVerdict
from argus.runtime.pool_shim import ensure_shim
from argus.runtime.reward_check import IMPORT_TIMEOUT_S, check_document, ensure_check_script, parse_result
from argus.spec.config import RayConfig
from argus.spec.taskspec import POOL_LABEL

CHECK_ID_PREFIX = "argus-reward-check-"
CHECK_NUM_CPUS = 0.1  # the most CPU a check's driver reserves on its worker
FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
LOG_LINES_SHOWN = 8
REDACTED = "<redacted>"


def new_check_id() -> str:
    """`argus-reward-check-<12 hex digits>`: the Ray submission id of one check."""
    return CHECK_ID_PREFIX + secrets.token_hex(6)


def redact(text: str, values: Mapping[str, str]) -> str:
    """`text` with each secret value (of 4 characters or more) replaced by `<redacted>`."""
    for value in sorted(values.values(), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, REDACTED)
    return text


def check_env(request: RewardCheck, shared_root: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The check's environment variables beyond `base`: `base`, the task's env_vars, then the
    job's import path (`PYTHONSAFEPATH=1`, `PYTHONPATH=<code_path>:<pool shim dir>`)."""
    env = dict(base or {})
    env.update(request.env_vars)
    env["PYTHONSAFEPATH"] = "1"
    env["PYTHONPATH"] = f"{request.code_path}:{ensure_shim(shared_root)}"
    return env


def _document(request: RewardCheck, timeout_s: float) -> str:
    return check_document(
        reward_path=request.reward_path,
        function=request.function,
        train_file=request.train_file,
        rows=request.rows,
        call_timeout_s=request.call_timeout_s,
        response=FAKE_RESPONSE,
        import_timeout_s=min(IMPORT_TIMEOUT_S, max(1.0, timeout_s / 2)),
    )


def _verdict(output: str, request: RewardCheck) -> RewardVerdict | None:
    found = parse_result(output)
    if found is None:
        return None
    if found.get("ok") is True:
        return RewardVerdict(ok=True, scores=[float(s) for s in found.get("scores", [])])
    return RewardVerdict(ok=False, error=redact(str(found.get("error", "")), request.secrets))


def _last_lines(text: str, request: RewardCheck) -> str:
    lines = [line for line in text.splitlines() if line.strip()][-LOG_LINES_SHOWN:]
    return redact("\n".join(lines), request.secrets) or "(no output)"


class _SecretsFile:
    """The check's secrets file, when it has secrets: written on enter, removed on exit."""

    def __init__(self, shared_root: str, request: RewardCheck, check_id: str):
        self.values = request.secrets
        self.path = str(secrets_file(shared_root, request.user_id, f"check-{check_id}")) if self.values else None

    def __enter__(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            write_secrets_file(self.path, self.values)
        except OSError as exc:
            raise Unavailable(f"cannot write the reward check's secrets file: {exc.strerror or exc}") from None
        return {SECRETS_FILE_ENV: self.path}

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            remove_secrets_file(self.path)


class RayRewardChecker:
    """Runs each check as a short Ray job on a worker node."""

    def __init__(
        self,
        config: RayConfig,
        client: Any = None,
        poll_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.jobs = RayJobTool(config, client_factory=(lambda _address: client) if client is not None else None)
        self.poll_s = poll_s
        self._sleep = sleep
        self._monotonic = monotonic

    def submission(self, request: RewardCheck, check_id: str, extra_env: Mapping[str, str], timeout_s: float):
        """The keyword arguments of `submit_job` for this check (no secret value in them)."""
        script = ensure_check_script(self.config.shared_root)
        env = check_env(request, self.config.shared_root, self.config.runtime_env.env_vars)
        env.update(extra_env)
        kwargs: dict[str, Any] = {
            "entrypoint": f"python3 -P {shlex.quote(str(script))} {shlex.quote(_document(request, timeout_s))}",
            "submission_id": check_id,
            "runtime_env": {"env_vars": env},
            "entrypoint_num_cpus": min(self.config.entrypoint_num_cpus, CHECK_NUM_CPUS),
            "entrypoint_resources": dict(self.config.entrypoint_resources),
            "metadata": {"argus.kind": "reward-check", "argus.user": request.user_id},
        }
        if request.pool:
            kwargs["entrypoint_label_selector"] = {POOL_LABEL: request.pool}
        return kwargs

    def check(self, request: RewardCheck, timeout_s: float) -> RewardVerdict:
        """Run the check as a Ray job; see `argus.ports.RewardChecker.check`.

        Raises:
            Unavailable: Ray cannot be reached, the job did not end within `timeout_s` (it is
                stopped), or it ended without a verdict.
        """
        deadline = self._monotonic() + timeout_s
        check_id = new_check_id()
        with _SecretsFile(self.config.shared_root, request, check_id) as extra_env:
            try:
                kwargs = self.submission(request, check_id, extra_env, timeout_s)
            except OSError as exc:
                raise Unavailable(f"cannot write the reward check's script to shared storage: {exc}") from None
            try:
                self.jobs.client.submit_job(**kwargs)
                status = self._wait(check_id, deadline)
                if status is None:
                    self._stop(check_id)
                    raise Unavailable(
                        f"the reward check did not finish within {timeout_s:g} s (Ray job {check_id}; "
                        "no worker may have been free to run it); try again later"
                    )
                log = self.jobs.logs(check_id)
            except ClusterError as exc:
                raise Unavailable(f"the reward check could not run on Ray: {exc}") from None
            except (ConnectionError, OSError) as exc:
                raise Unavailable(f"the reward check could not reach Ray: {exc}") from None
            except RuntimeError as exc:  # the Jobs SDK's answer to a refused request
                raise Unavailable(f"the reward check could not run on Ray: {exc}") from None
        verdict = _verdict(log, request)
        if verdict is None:
            raise Unavailable(
                f"the reward check (Ray job {check_id}) ended {status} without a verdict; "
                f"its last lines:\n{_last_lines(log, request)}"
            )
        return verdict

    def _wait(self, check_id: str, deadline: float) -> str | None:
        """The job's final status, or None when `deadline` passed first."""
        while True:
            status = self.jobs.status(check_id, diagnose=False).status
            if status in FINAL_STATUSES:
                return status
            if self._monotonic() >= deadline:
                return None
            self._sleep(min(self.poll_s, max(0.0, deadline - self._monotonic())))

    def _stop(self, check_id: str) -> None:
        try:
            self.jobs.stop(check_id)
        except Exception:  # stopping is best effort; the answer is Unavailable either way
            pass


class LocalRewardChecker:
    """Runs each check as a subprocess of this machine, with a node's allow-list environment."""

    def __init__(self, shared_root: str, python: str = sys.executable):
        self.shared_root = shared_root
        self.python = python

    def check(self, request: RewardCheck, timeout_s: float) -> RewardVerdict:
        """Run the check as a subprocess; see `argus.ports.RewardChecker.check`.

        Raises:
            Unavailable: the environment cannot be built, the process did not end within
                `timeout_s` (it is killed), or it ended without a verdict.
        """
        check_id = new_check_id()
        script = ensure_check_script(self.shared_root)
        try:
            base = node_env()
        except ClusterError as exc:
            raise Unavailable(f"the reward check's environment: {exc}") from None
        with _SecretsFile(self.shared_root, request, check_id) as extra_env:
            env = check_env(request, self.shared_root, base)
            env.update(extra_env)
            cwd = tempfile.mkdtemp(prefix="argus-reward-check-")
            try:
                code, out = self._run(
                    [self.python, "-P", str(script), _document(request, timeout_s)], env, cwd, timeout_s
                )
            finally:
                shutil.rmtree(cwd, ignore_errors=True)
        if code is None:
            raise Unavailable(f"the reward check did not finish within {timeout_s:g} s (its process was killed)")
        verdict = _verdict(out, request)
        if verdict is None:
            raise Unavailable(
                f"the reward check's process exited {code} without a verdict; its last lines:\n"
                f"{_last_lines(out, request)}"
            )
        return verdict

    @staticmethod
    def _run(args: list[str], env: dict[str, str], cwd: str, timeout_s: float) -> tuple[int | None, str]:
        """Exit code (None when killed at the timeout) and stdout+stderr."""
        try:
            proc = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                umask=NODE_UMASK,
                start_new_session=True,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start the reward check: {exc}") from None
        try:
            out, _ = proc.communicate(timeout=timeout_s)
            return proc.returncode, out.decode(errors="replace")
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a grandchild in a session of its own holds the pipe
                proc.kill()
            return None, ""
