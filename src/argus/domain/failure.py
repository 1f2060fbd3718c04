"""Failure cause: why a job failed, from what Ray and the log say (seed 001 §2.1).

Pure: `classify_failure(status, message, log_tail, error_type)` returns a `Diagnosis` (the
cause and the line that shows it) for a FAILED job, None for any other status. Rules are
checked in order, most specific first; within a rule the last matching log line wins, since
the final traceback is what ended the job. The scheduler uses the cause to decide on retries:
INSUFFICIENT_RESOURCES is worth waiting for, CONFIG is not.

NODE_LOST is a node that died under the job (its raylet gone): Ray 2.60 fails the job with
"Job supervisor actor died: ... The actor died because its node has died." when the driver's
node died, and a driver whose workers' node died logs the same words in its traceback. It is
checked before PLATFORM, whose rule also matches those messages.

PREEMPTED is never diagnosed from a log: the scheduler gives it to an attempt it stopped to make
room for a waiting task of higher priority (`argus.scheduler.preempt`); the task is requeued
and that attempt does not count against `max_attempts` (`argus.domain.outcome.attempts_used`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class FailureCause(StrEnum):
    INSUFFICIENT_RESOURCES = "INSUFFICIENT_RESOURCES"
    CONFIG = "CONFIG"
    DATA = "DATA"
    MODEL = "MODEL"
    OOM = "OOM"
    NCCL = "NCCL"
    USER_CODE = "USER_CODE"
    PLATFORM = "PLATFORM"
    NODE_LOST = "NODE_LOST"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class Diagnosis:
    cause: FailureCause
    evidence: str

    def __str__(self) -> str:
        return f"{self.cause.value}: {self.evidence}"


_I = re.IGNORECASE
# Ray's JobErrorType values that mean the platform, not the job, failed.
_PLATFORM_ERROR_TYPES = {
    "RUNTIME_ENV_SETUP_FAILURE",
    "JOB_SUPERVISOR_ACTOR_START_TIMEOUT",
    "JOB_SUPERVISOR_ACTOR_START_FAILURE",
    "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE",
    "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE",
    "JOB_SUPERVISOR_ACTOR_DIED",
}
_RULES: list[tuple[FailureCause, re.Pattern[str]]] = [
    (
        FailureCause.INSUFFICIENT_RESOURCES,
        re.compile(
            r"Total available GPUs \S+ is less than total desired GPUs \S+"
            r"|placement group .* could not be (scheduled|placed)"
            r"|No available node types can fulfill resource request"
            r"|(requested|request) (resources|GPUs?) (is|are) (infeasible|unavailable)",
            _I,
        ),
    ),
    (
        FailureCause.OOM,
        re.compile(
            r"CUDA out of memory|torch\.(cuda\.)?OutOfMemoryError|OutOfMemoryError"
            r"|Task was killed due to the node running low on memory|\bKilled\b.*oom|MemoryError",
            _I,
        ),
    ),
    (
        FailureCause.NCCL,
        re.compile(
            r"NCCL (error|WARN|failure)|nccl(InternalError|SystemError|InvalidUsage|RemoteError)"
            r"|DistBackendError|NCCL communicator|Watchdog caught collective operation timeout"
        ),
    ),
    (
        FailureCause.NODE_LOST,
        re.compile(
            r"died because its node has died|its node has died|node \S+ (has died|was lost)"
            r"|raylet (died|is dead|has died)|NodeDiedError",
            _I,
        ),
    ),
    (
        FailureCause.PLATFORM,
        re.compile(
            r"RuntimeEnvSetupError|Failed to set up runtime environment|Job supervisor actor"
            r"|The actor died unexpectedly|raylet (died|is dead)|node .* (died|is dead)"
            r"|GcsRpcError|Failed to connect to GCS|ConnectionError: .*ray",
            _I,
        ),
    ),
    (
        FailureCause.CONFIG,
        re.compile(
            r"Could not override '|ConfigCompositionException|Could not append to config"
            r"|MissingMandatoryValue|ConfigAttributeError|ConfigKeyError"
            r"|omegaconf\.errors\.|hydra\.errors\.|Error merging override"
        ),
    ),
    (
        FailureCause.MODEL,
        re.compile(
            r"is not a local folder and is not a valid model identifier"
            r"|HFValidationError|Repo id must|Can't load (tokenizer|the configuration|config)"
            r"|does not appear to have a file named config\.json|Unrecognized model in"
            r"|safetensors_rust\.SafetensorError|Error no file named .*(bin|safetensors)",
            _I,
        ),
    ),
    (
        FailureCause.DATA,
        re.compile(
            r"FileNotFoundError.*\.(parquet|jsonl?|csv|arrow)|Unable to find '[^']*'"
            r"|ArrowInvalid|Parquet magic bytes not found|DatasetGenerationError"
            r"|No such file or directory: '[^']*\.(parquet|jsonl?|csv)'",
            _I,
        ),
    ),
    (
        FailureCause.USER_CODE,
        re.compile(
            r"^\s*(\w+\.)*\w*(Error|Exception)\b(:.*)?$"
            r"|ModuleNotFoundError|ImportError|SyntaxError|Traceback \(most recent call last\)"
        ),
    ),
]


def _last_match(pattern: re.Pattern[str], lines: list[str]) -> str | None:
    for line in reversed(lines):
        if pattern.search(line):
            return line.strip()[:500]
    return None


def classify_failure(
    status: str,
    message: str | None = None,
    log_tail: str | None = None,
    error_type: str | None = None,
) -> Diagnosis | None:
    """The cause of a failed job, with the line that shows it.

    Args:
        status: Ray's job status (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED).
        message: Ray's status message for the job.
        log_tail: the end of the job's driver log.
        error_type: Ray's `JobErrorType` value, when it set one.

    Returns:
        A `Diagnosis`, or None when the job did not fail.
    """
    if str(status).upper() != "FAILED":
        return None
    lines = [ln for ln in (message or "").splitlines() + (log_tail or "").splitlines() if ln.strip()]
    for cause, pattern in _RULES:
        if cause is FailureCause.PLATFORM and error_type in _PLATFORM_ERROR_TYPES:
            return Diagnosis(cause, _last_match(pattern, lines) or f"Ray error type {error_type}")
        line = _last_match(pattern, lines)
        if line is not None:
            return Diagnosis(cause, line)
    evidence = (message or "").strip().splitlines()
    return Diagnosis(FailureCause.UNKNOWN, evidence[-1][:500] if evidence else "no message from Ray")
