"""A custom reward function's check before its task is accepted (seed 001 §6, v3.1): what is
asked and what comes back. Pure data; `argus.ports.RewardChecker` runs it, never in the server.

The check imports the function from its file the way verl does and calls it with verl's
signature `(data_source, solution_str, ground_truth, extra_info=None)` on the first rows of the
train file (verl's columns `data_source` and `reward_model.ground_truth`), with a fixed fake
response, within a time limit. A verdict that is not `ok` carries the traceback's last lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CHECK_ROWS = 3
CALL_TIMEOUT_S = 10.0
# The response the check hands the function: fixed, so a verdict is reproducible.
FAKE_RESPONSE = "Let me think step by step. The answer is 42. #### 42"


@dataclass(frozen=True)
class RewardCheck:
    """One reward function to try, in the environment its task's job would have."""

    user_id: str
    code_path: str  # first on the check's PYTHONPATH, as in the job
    reward_path: str
    function: str
    train_file: str
    env_vars: dict[str, str] = field(default_factory=dict)  # the TaskSpec's (never secrets)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # values; handed over in a 0600 file
    pool: str | None = None
    rows: int = CHECK_ROWS
    call_timeout_s: float = CALL_TIMEOUT_S


@dataclass(frozen=True)
class RewardVerdict:
    """The outcome: `ok` with the scores of the rows, or the error's last traceback lines."""

    ok: bool
    scores: list[float] = field(default_factory=list)
    error: str = ""
