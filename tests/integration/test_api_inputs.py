"""User inputs cannot escape, through the real API over SQLite and PostgreSQL (issue 10, 1-2).

Each probe reproduction is POSTed as a user; the answer is 400 naming the field, and nothing is
stored. The same override naming a user's own directory is accepted for that user only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from api_support import ADMIN_TOKEN, Api, AppFactory, backend, no_verl_config_override

from argus.testing.sandbox import Sandbox, prepare

pytestmark = pytest.mark.usefixtures("no_verl_config_override")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    box = prepare(tmp_path_factory.mktemp("shared"))
    for user in ("alice", "bob"):
        (box.shared_root / "users" / user / "models" / "m").mkdir(parents=True)
    evil = box.shared_root / "common" / "evil"
    evil.mkdir()
    (evil / "etc_link").symlink_to("/etc")
    return box


@pytest.fixture(scope="module")
def api(sandbox, backend) -> Iterator[Api]:
    factory = AppFactory(sandbox, backend)
    try:
        yield Api(factory(), sandbox, backend)
    finally:
        factory.close_all()


@pytest.fixture(scope="module")
def users(api) -> dict[str, Any]:
    return {name: api.create_user(name) for name in ("alice", "bob")}


@contextmanager
def nothing_stored(api: Api):
    before = (api.backend.count("tasks"), api.backend.count("task_events"))
    yield
    assert (api.backend.count("tasks"), api.backend.count("task_events")) == before


def refused(api: Api, who, text: str, field: str) -> str:
    """POST `text` as `who`: 400 naming exactly `field`, nothing stored; returns the reason."""
    with nothing_stored(api):
        r = api.post_yaml(who, text)
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == "bad_request", body
    assert [p["field"] for p in body["problems"]] == [field], body
    return body["problems"][0]["message"]


@pytest.mark.parametrize(
    "override, says",
    [
        ("trainer.experiment_name=${oc.env:MVP_INTERNAL_TOKEN}", "interpolation"),
        ("trainer.project_name='${oc.decode:x}'", "interpolation"),
        ("data.train_files=/etc/passwd", "'/etc/passwd' must lie under"),
        ("hydra.run.dir=/etc", "Hydra's own configuration"),
        ("trainer.rollout_data_dir=/tmp/x", "writes to"),
        ("+reward.custom_reward_function.path=/etc/x.py", "'/etc/x.py' must lie under"),
        ("+ray_kwargs.ray_init.runtime_env.env_vars.LD_PRELOAD=/tmp/x.so", "environment"),
        ("data.train_files='~/x.parquet'", "home directory"),
    ],
)
def test_escaping_overrides_are_400_naming_the_override(api, users, override, says):
    text = api.spec(overrides=["data.train_batch_size=8", override])
    reason = refused(api, users["alice"], text, "overrides[1]")
    assert says in reason
    assert ADMIN_TOKEN not in reason


def test_a_users_own_model_is_theirs_alone(api, users, sandbox):
    bobs = f"actor_rollout_ref.model.path={sandbox.shared_root}/users/bob/models/m"
    text = api.spec(overrides=[bobs])
    reason = refused(api, users["alice"], text, "overrides[0]")
    assert f"{sandbox.shared_root}/users/alice/" in reason and "users/bob/" not in reason.split("under")[1]
    tid = api.submit(users["bob"], text)
    assert tid.startswith("mvp2-bob-")
    got = api.get(users["bob"], f"/api/v2/tasks/{tid}").json()
    assert got["state"] == "QUEUED"


def test_model_id_outside_a_hub_id_or_the_users_roots_is_refused(api, users, sandbox):
    refused(api, users["alice"], api.spec(model_id="~/../shared/users/bob/m"), "model_id")
    refused(api, users["alice"], api.spec(model_id=f"{sandbox.shared_root}/users/bob/models/m"), "model_id")


def test_a_symlink_then_dot_dot_cannot_lead_out_of_common(api, users, sandbox):
    sneaky = f"{sandbox.shared_root}/common/evil/etc_link/../etc/passwd"
    assert Path(sneaky).read_text()  # the kernel opens /etc/passwd
    refused(api, users["alice"], api.spec(train_file=sneaky), "train_file")
    refused(api, users["alice"], api.spec(overrides=[f"data.val_files={sneaky}"]), "overrides[0]")


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "PYTHONHOME", "PATH", "BASH_ENV", "CUDA_VISIBLE_DEVICES", "RAY_RUNTIME_ENV_HOOK"]
)
def test_env_vars_that_change_the_loader_interpreter_or_ray_are_refused(api, users, name):
    reason = refused(api, users["alice"], api.spec(env_vars={"NCCL_DEBUG": "INFO", name: "/tmp/x"}), f"env_vars.{name}")
    assert reason.startswith(f"'{name}' cannot be set: it ")
