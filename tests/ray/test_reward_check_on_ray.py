"""The reward function's check as a short Ray job on the real local cluster: a good and a broken
reward, secrets handed over in a file, and the check's driver on a worker, never the head."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_nodes

from argus.cluster.reward_check import CHECK_ID_PREFIX, RayRewardChecker
from argus.domain.reward import RewardCheck

pytestmark = pytest.mark.ray

GOOD = """
import os

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    assert os.environ["RC_TOKEN"] == "ray-check-secret-value"
    return float(ground_truth) + (0.5 if "#### 42" in solution_str else 0.0)
"""

BROKEN = """
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    return {"acc": ground_truth}
"""


@pytest.fixture(scope="module")
def user_files(ray_config):
    code = Path(ray_config.shared_root) / "users" / "alice" / "code" / "reward-check-test"
    code.mkdir(parents=True, exist_ok=True)
    (code / "good.py").write_text(GOOD)
    (code / "broken.py").write_text(BROKEN)
    train = code / "train.parquet"
    pq.write_table(
        pa.table(
            {
                "data_source": ["gsm8k"] * 4,
                "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(4)],
                "reward_model": [{"style": "rule", "ground_truth": str(i)} for i in range(4)],
            }
        ),
        train,
    )
    return code


def _request(code: Path, name: str, **fields) -> RewardCheck:
    return RewardCheck(
        user_id="alice",
        code_path=str(code),
        reward_path=str(code / name),
        function="compute_score",
        train_file=str(code / "train.parquet"),
        **fields,
    )


def test_reward_check_runs_as_a_job_on_a_worker(ray_cluster, ray_config, user_files):
    checker = RayRewardChecker(ray_config, poll_s=0.2)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    earlier = {j.submission_id for j in client.list_jobs()}  # other tests' checks are not ours
    good = checker.check(_request(user_files, "good.py", secrets={"RC_TOKEN": "ray-check-secret-value"}), 120)
    assert good.ok, good.error
    assert good.scores == [0.5, 1.5, 2.5]

    broken = checker.check(_request(user_files, "broken.py"), 120)
    assert not broken.ok and broken.scores == []
    assert "row 0: the reward function returned a dict without a numeric 'score'" in broken.error

    checks = [
        j
        for j in client.list_jobs()
        if (j.submission_id or "").startswith(CHECK_ID_PREFIX) and j.submission_id not in earlier
    ]
    assert len(checks) == 2 and all(j.status.value == "SUCCEEDED" for j in checks)
    nodes = list_nodes(address=ray_cluster.dashboard_url, detail=True)
    head = {n.node_id for n in nodes if n.is_head_node}
    workers = {n.node_id for n in nodes if not n.is_head_node}
    for job in checks:
        assert job.driver_node_id in workers and job.driver_node_id not in head, job.submission_id
        assert job.metadata == {"argus.kind": "reward-check", "argus.user": "alice"}
        assert "ray-check-secret-value" not in json.dumps(job.runtime_env) + job.entrypoint
    assert list((Path(ray_config.shared_root) / "users" / "alice" / ".secrets").iterdir()) == []
