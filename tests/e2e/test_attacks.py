"""The attacker's probe, kept: each reproduction that once worked against `argus up`, against a
real `argus server` over the real local Ray cluster, with two users and the admin.

The session cluster was started from a hostile caller (tests/conftest.py: the admin token in its
environment, a shadow `mvp_marker.py` and `secrets.py` in its working directory); this module's
server is started from such a directory too. Every refusal is checked for its status, the field
it names, and that nothing was stored.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from argus.client.sdk import ArgusAPIError, ArgusClient
from argus.cluster import local
from argus.testing.cluster import quiesce
from argus.testing.sandbox import make_snapshot, task_yaml
from argus.testing.server import ServerProcess, user_client, wait_state
from conftest import HOSTILE_ADMIN_TOKEN, SHADOW_MARKER, hostile_cwd

pytestmark = pytest.mark.ray
ADMIN = "attack-probe-admin-token"
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"}
PROBE_MARKER = '''"""Which snapshot this is, and what the process that imported it could see."""
import os
import sys

MARKER = "probe token=%s path0=%s" % ("MVP_INTERNAL_TOKEN" in os.environ, sys.path[0])
'''


@pytest.fixture(scope="module")
def probe(ray_cluster, sandbox, tmp_path_factory):
    """(server, admin, alice, bob) on an idle cluster; the server runs in a hostile cwd."""
    quiesce(ray_cluster)
    work = tmp_path_factory.mktemp("attacks")
    srv = ServerProcess(local.config_file(ray_cluster.shared_root), work, ADMIN, cwd=hostile_cwd(work / "server-cwd"))
    srv.start()
    admin = ArgusClient(srv.url, ADMIN)
    alice = user_client(srv.url, ADMIN, "alice")
    bob = user_client(srv.url, ADMIN, "bob")
    try:
        yield srv, admin, alice, bob
    finally:
        srv.stop()


def refused(client: ArgusClient, text: str, field: str) -> ArgusAPIError:
    """Submit `text`; assert a 400 that names `field`, and that no task was stored."""
    before = len(client.tasks(limit=500)["tasks"])
    with pytest.raises(ArgusAPIError) as err:
        client.submit(text)
    assert err.value.status == 400, err.value
    fields = [p["field"] for p in err.value.problems]
    assert any(f == field or f.startswith(field + "[") or f.startswith(field + ".") for f in fields), (
        field,
        err.value.problems,
    )
    assert len(client.tasks(limit=500)["tasks"]) == before
    return err.value


# -- 1, 2: inputs from anywhere ---------------------------------------------------------------
def test_interpolation_cannot_read_the_admin_token(probe, sandbox):
    _, _, alice, _ = probe
    for override in (
        "trainer.experiment_name=${oc.env:MVP_INTERNAL_TOKEN}",
        "trainer.project_name='${oc.env:MVP_INTERNAL_TOKEN}'",
        "+extra.key=${oc.decode:x}",
    ):
        err = refused(alice, task_yaml(sandbox, "ppo", overrides=[override]), "overrides")
        assert HOSTILE_ADMIN_TOKEN not in str(err.problems) and ADMIN not in str(err.problems)


def test_overrides_cannot_read_or_write_outside_the_users_roots(probe, sandbox, ray_cluster):
    _, _, alice, bob = probe
    shared = Path(ray_cluster.shared_root)
    bobs_model = shared / "users" / "bob" / "models" / "m"
    bobs_model.mkdir(parents=True, exist_ok=True)
    for override in (
        "data.train_files=/etc/passwd",
        f"actor_rollout_ref.model.path={bobs_model}",
        "hydra.run.dir=/etc",
        "trainer.rollout_data_dir=/tmp/elsewhere",
        "+reward.custom_reward_function.path=/etc/passwd",
        "data.train_files=~/x.parquet",
        f"data.train_files=file:{bobs_model}",
        "data.train_files=local:///etc/passwd",
        "data.train_files=simplecache::/etc/passwd",
        "+data.extra=[" + ",".join(["1"] * 1500) + "]",
    ):
        refused(alice, task_yaml(sandbox, "ppo", overrides=[override]), "overrides")
    # Bob may name his own model.
    own = bob.submit(task_yaml(sandbox, "ppo", overrides=[f"actor_rollout_ref.model.path={bobs_model}"]))
    bob.cancel(own["task_id"])


def test_model_ids_and_links_cannot_lead_out(probe, sandbox, ray_cluster):
    _, _, alice, _ = probe
    refused(alice, task_yaml(sandbox, "ppo", model_id="~/../shared/users/bob/m"), "model_id")
    evil = Path(ray_cluster.shared_root) / "common" / "evil"
    evil.mkdir(parents=True, exist_ok=True)
    link = evil / "etc_link"
    if not link.is_symlink():
        link.symlink_to("/etc")
    refused(alice, task_yaml(sandbox, "ppo", train_file=f"{link}/../etc/passwd"), "train_file")
    refused(alice, task_yaml(sandbox, "ppo", train_file=f"{link}/passwd"), "train_file")


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "PYTHONHOME", "PATH", "BASH_ENV", "CUDA_VISIBLE_DEVICES", "RAY_RUNTIME_ENV_HOOK"]
)
def test_env_vars_cannot_change_the_loader_interpreter_or_ray(probe, sandbox, name):
    _, _, alice, _ = probe
    refused(alice, task_yaml(sandbox, "ppo", env_vars={name: "/tmp/x"}), "env_vars")


def test_env_var_values_cannot_point_into_another_users_directory(probe, sandbox, ray_cluster):
    _, _, alice, _ = probe
    bobs = Path(ray_cluster.shared_root) / "users" / "bob" / "hf"
    refused(alice, task_yaml(sandbox, "ppo", env_vars={"HF_HOME": str(bobs)}), "env_vars")


# -- 1, 3: what a job can see and import -------------------------------------------------------
def test_a_job_sees_no_admin_token_and_imports_its_own_code_first(probe, sandbox, ray_cluster):
    srv, _, alice, _ = probe
    code = make_snapshot(Path(ray_cluster.shared_root) / "common" / "code" / "verl" / "probe", "probe")
    (code / "mvp_marker.py").write_text(PROBE_MARKER)
    tid = alice.submit(task_yaml(sandbox, "ppo", code_path=str(code)))["task_id"]
    task = wait_state(alice, tid, FINAL, timeout=180)
    log = alice.logs(tid)
    assert task["state"] == "SUCCEEDED", log[-3000:]
    assert f"MARKER probe token=False path0={code}" in log, log[:2000]
    for secret in (HOSTILE_ADMIN_TOKEN, ADMIN):
        assert secret not in log
    assert SHADOW_MARKER not in log
    # No process of the cluster or of the server imported the shadow modules of their callers.
    for cwd in (Path(ray_cluster.shared_root) / "caller-cwd", srv.cwd):
        assert sorted(p.name for p in (cwd / "imported").iterdir()) == [], cwd


# -- 4: nothing of another user ---------------------------------------------------------------
def test_another_users_tasks_stay_out_of_listings_reasons_and_files(probe, sandbox, ray_cluster):
    srv, admin, alice, bob = probe
    quiesce(ray_cluster)
    long = task_yaml(
        sandbox,
        "ppo",
        n_gpus_per_node=4,
        total_training_steps=200,
        save_freq=200,
        env_vars={"VERL_SIM_STEP_SECONDS": "0.5"},
        time_limit="10m",
    )
    holder = bob.submit(long)["task_id"]
    wait_state(bob, holder, {"RUNNING"}, timeout=90)
    # bob's whole-cluster task waits with a high priority, reserved behind `holder`.
    big = bob.submit(task_yaml(sandbox, "ppo", nnodes=2, n_gpus_per_node=4))["task_id"]
    admin.set_priority(big, 900)
    mine = alice.submit(task_yaml(sandbox, "ppo", n_gpus_per_node=2, time_limit="1h"))["task_id"]
    try:
        task = wait_state(alice, mine, {"PENDING_RESOURCES", "QUEUED", "RUNNING", "SUCCEEDED"}, timeout=30)
        for _ in range(20):
            task = alice.task(mine)
            if task.get("pending_reason"):
                break
        text = repr(task) + repr(alice.queue()) + repr(alice.nodes())
        assert "bob" not in text, text
        assert holder in repr(admin.nodes())  # the admin sees every task
        # bob's own job files are not readable by others, and alice's debug files name only hers.
        root = Path(bob.task(holder)["latest_attempt"]["job_root"])
        for path in [root, *root.rglob("*")]:
            assert not path.stat().st_mode & stat.S_IRWXO, (path, oct(path.stat().st_mode))
    finally:
        for client, tid in ((alice, mine), (bob, big), (bob, holder)):
            try:
                client.cancel(tid)
            except ArgusAPIError:
                pass
    wait_state(bob, holder, FINAL, timeout=60)
    quiesce(ray_cluster)


def test_debug_files_name_only_the_jobs_own_ray_job(probe, sandbox):
    _, _, alice, bob = probe
    theirs = bob.submit(task_yaml(sandbox, "ppo"))["task_id"]
    mine = alice.submit(task_yaml(sandbox, "ppo", env_vars={"WANDB_API_KEY": "k-alice-secret"}))["task_id"]
    for client, tid in ((bob, theirs), (alice, mine)):
        assert wait_state(client, tid, FINAL, timeout=180)["state"] == "SUCCEEDED"
    task = alice.task(mine)
    root = Path(task["latest_attempt"]["job_root"])
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".txt", ".json", ".yaml"):
            text = path.read_text(errors="replace")
            assert "bob" not in text, path
            assert "k-alice-secret" not in text, path
    assert "k-alice-secret" not in repr(task)


# -- 7: tokens ------------------------------------------------------------------------------
def test_disabling_a_user_revokes_their_tokens_for_good(probe):
    srv, admin, _, _ = probe
    carol = user_client(srv.url, ADMIN, "carol")
    assert carol.me()["user_id"] == "carol"
    admin.disable_user("carol")
    with pytest.raises(ArgusAPIError) as err:
        carol.me()
    assert err.value.status == 401
    admin.enable_user("carol")
    with pytest.raises(ArgusAPIError) as err:
        carol.me()
    assert err.value.status == 401
    fresh = ArgusClient(srv.url, admin.issue_token("carol")["token"])
    assert fresh.me()["user_id"] == "carol"


def test_server_files_carry_no_token_and_no_world_bits(probe):
    srv, _, _, _ = probe
    db = srv.workdir / "argus.sqlite3"
    assert not os.stat(db).st_mode & stat.S_IRWXO, oct(os.stat(db).st_mode)
