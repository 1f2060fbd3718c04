"""Shared helpers of the unit tests: minimal valid TaskSpec / RayConfig mappings.

Everything here is pure: no Ray, no network. The autouse fixture removes
ARGUS_VERL_CONFIG_DIR so the Hydra checks always use the verl config the test names
(``<code_path>/verl/trainer/config`` or the installed verl 0.9.1).
"""

from __future__ import annotations

from typing import Any

import pytest

SHARED = "/srv/shared"


def spec_dict(workload: str = "ppo", **extra: Any) -> dict[str, Any]:
    """A minimal valid TaskSpec mapping for `workload`, updated with `extra`."""
    data: dict[str, Any] = {
        "workload": workload,
        "code_path": "/srv/shared/user/code",
        "model_id": "/models/Qwen2.5-0.5B-Instruct",
        "train_file": "/data/gsm8k/train.parquet",
    }
    data.update(extra)
    return data


@pytest.fixture(autouse=True)
def _no_verl_config_override(monkeypatch):
    monkeypatch.delenv("ARGUS_VERL_CONFIG_DIR", raising=False)
