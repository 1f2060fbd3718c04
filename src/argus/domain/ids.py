"""Identifiers: submission ids for the job tool (the service derives its own from task ids).

Pure: the clock and the randomness are passed in.
"""

from __future__ import annotations

import secrets
from datetime import datetime


def new_submission_id(workload: str, now: datetime, suffix: str | None = None) -> str:
    """`mvp11-<workload>-<YYYYMMDD>-<HHMMSS>-<4 hex>`, the seeds' v1.1 shape.

    Args:
        workload: ppo, grpo or sft.
        now: the current time (UTC), passed in.
        suffix: 4 hex characters; random when None.
    """
    tail = suffix if suffix is not None else secrets.token_hex(2)
    return f"mvp11-{workload}-{now:%Y%m%d-%H%M%S}-{tail}"
