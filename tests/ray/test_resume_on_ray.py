"""A retried attempt resumes from its predecessor's checkpoint on the real local Ray cluster: a
real `argus server` process, the SDK over HTTP, the CPU stand-in for verl as the training code.

The first attempt saves `global_step_2` and then fails with an NCCL error (the stand-in's
`VERL_SIM_FAIL_AFTER_STEP`, which a resumed run ignores); the scheduler retries it, and the
second attempt is submitted with `trainer.resume_mode=resume_path` and
`trainer.resume_from_path=<attempt 1>/checkpoints/global_step_2`, runs steps 3 to 6 and succeeds.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from helpers import user_client, wait_state

from argus.cluster import local
from argus.testing.sandbox import task_yaml
from argus.testing.server import ServerProcess

pytestmark = pytest.mark.ray
ADMIN = "test-admin-token"


@pytest.fixture
def server(idle_cluster, sandbox, tmp_path):
    srv = ServerProcess(local.config_file(idle_cluster.shared_root), tmp_path, ADMIN)
    srv.start()
    yield srv
    srv.stop()


def _steps(log: str) -> list[int]:
    return [int(line.split(" - ", 1)[0].split(":", 1)[1]) for line in log.splitlines() if line.startswith("step:")]


def test_a_retried_attempt_resumes_from_the_checkpoint_its_predecessor_saved(server, sandbox, ray_cluster):
    carol = user_client(server.url, ADMIN, "carol")
    spec = task_yaml(
        sandbox,
        "ppo",
        total_training_steps=6,
        save_freq=2,
        max_ckpt_to_keep=1,
        env_vars={"VERL_SIM_STEP_SECONDS": "0.2", "VERL_SIM_FAIL_AFTER_STEP": "2"},
    )
    tid = carol.submit(spec)["task_id"]
    task = wait_state(carol, tid, {"SUCCEEDED", "FAILED"}, timeout=240)
    first, second = carol.attempts(tid)["attempts"]
    assert task["state"] == "SUCCEEDED", (task, carol.logs(tid, attempt=1, tail=30), carol.logs(tid, tail=30))
    assert (first["ray_status"], first["failure_kind"]) == ("FAILED", "NCCL"), first
    assert (first["resumed_from_step"], first["resumed_from"]) == (None, None)

    jobs = Path(ray_cluster.shared_root) / "users" / "carol" / "jobs"
    saved = jobs / f"{tid}--a01" / "checkpoints" / "global_step_2"
    assert (second["ray_status"], second["resumed_from_step"], second["resumed_from"]) == ("SUCCEEDED", 2, str(saved))
    assert task["latest_attempt"]["resumed_from_step"] == 2

    first_log, second_log = carol.logs(tid, attempt=1), carol.logs(tid, attempt=2)
    assert _steps(first_log) == [1, 2] and "NCCL error: verl-sim: injected" in first_log
    assert f"resumed from {saved}" in second_log.splitlines()
    assert _steps(second_log) == [3, 4, 5, 6]
    assert "verl-sim: training finished after 6 steps (resumed after step 2)" in second_log
    payload = json.loads((jobs / f"{tid}--a02" / "config" / "submit_payload.json").read_text())
    assert shlex.split(payload["entrypoint"])[-2:] == [
        "trainer.resume_mode=resume_path",
        f"trainer.resume_from_path='{saved}'",
    ]
    # Retention (max_ckpt_to_keep=1) pruned attempt 2's own saves only; attempt 1's stays.
    assert sorted(p.name for p in saved.parent.glob("global_step_*")) == ["global_step_2"]
    ckpt2 = jobs / f"{tid}--a02" / "checkpoints"
    assert sorted(p.name for p in ckpt2.glob("global_step_*")) == ["global_step_6"]
    assert (ckpt2 / "latest_checkpointed_iteration.txt").read_text() == "6"
