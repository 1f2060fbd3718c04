"""The platform's side of a job's secrets over a real database (SQLite, and PostgreSQL when
`ARGUS_TEST_DATABASE_URL` is set) and a real shared directory: `JobSecrets` writes the attempt's
file (0600 in a 0700 directory, with the shim that reads it) from the encrypted store, refuses a
secret that is gone, and the scheduler's archive step removes the file once the attempt ended,
whether its job finished, was cancelled, or Ray cannot even be reached.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from api_support import open_backend
from cryptography.fernet import Fernet
from test_scheduler import World

from argus.runtime.pool_shim import SHIM_TEXT, shim_dir
from argus.scheduler.secrets import JobSecrets, attempt_user, remove_attempt_secrets
from argus.store.secrets import InvalidSecretsKey, SecretsDisabled, SecretStore, SecretUnreadable

KEY = Fernet.generate_key().decode()
HF = "hf_SECRET-VALUE-41c2"
WANDB = "wandb-SECRET-VALUE-9e07"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from argus.testing.sandbox import prepare

    return prepare(tmp_path_factory.mktemp("shared"))


@pytest.fixture(params=["sqlite", "postgres"])
def world(request, sandbox, tmp_path):
    with open_backend(request.param, tmp_path) as backend:
        w = World(sandbox, tmp_path, db_url=backend.url)
        yield w
        w.db.dispose()


@pytest.fixture
def secrets(world) -> JobSecrets:
    store = SecretStore(world.db, KEY)
    store.put("alice", "HF_TOKEN", HF, world.now)
    store.put("alice", "WANDB_API_KEY", WANDB, world.now)
    return JobSecrets(str(world.sandbox.shared_root), store)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_attempts_file_holds_the_named_values_privately_and_goes(world, secrets):
    sid = "mvp2-alice-ppo-x--a01"
    secrets.write("alice", sid, ["WANDB_API_KEY", "HF_TOKEN"])
    path = Path(world.sandbox.shared_root) / "users" / "alice" / ".secrets" / f"{sid}.json"
    assert Path(str(secrets.path("alice", sid))) == path
    assert json.loads(path.read_text()) == {"WANDB_API_KEY": WANDB, "HF_TOKEN": HF}
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert (Path(shim_dir(str(world.sandbox.shared_root))) / "sitecustomize.py").read_text() == SHIM_TEXT
    secrets.write("alice", sid, ["HF_TOKEN"])  # a rewrite holds exactly what is named now
    assert json.loads(path.read_text()) == {"HF_TOKEN": HF}
    secrets.remove("alice", sid)
    assert not path.exists() and path.parent.is_dir()
    secrets.remove("alice", sid)  # gone already: nothing to do
    secrets.write("alice", "mvp2-alice-ppo-x--a02", [])
    assert list(path.parent.iterdir()) == []  # no names: no file


def test_a_secret_that_is_gone_or_anothers_is_refused_and_nothing_is_written(world, secrets):
    secrets.store.delete("alice", "HF_TOKEN")
    with pytest.raises(KeyError) as gone:
        secrets.write("alice", "j--a01", ["WANDB_API_KEY", "HF_TOKEN"])
    assert gone.value.args == ("HF_TOKEN",)
    with pytest.raises(KeyError) as other:
        secrets.write("bob", "j--a01", ["WANDB_API_KEY"])  # alice's, not bob's
    assert other.value.args == ("WANDB_API_KEY",)
    for user in ("alice", "bob"):
        assert not Path(str(secrets.path(user, "j--a01"))).exists()


def test_without_the_key_nothing_is_decrypted(world, secrets):
    keyless = JobSecrets(secrets.shared_root, SecretStore(world.db, None))
    with pytest.raises(SecretsDisabled):
        keyless.write("alice", "j--a01", ["HF_TOKEN"])
    assert [s.name for s in keyless.store.names("alice")] == ["HF_TOKEN", "WANDB_API_KEY"]
    with pytest.raises(SecretsDisabled):
        keyless.store.put("alice", "X", "y", world.now)
    other = JobSecrets(secrets.shared_root, SecretStore(world.db, Fernet.generate_key().decode()))
    with pytest.raises(SecretUnreadable) as err:  # the key changed
        other.write("alice", "j--a01", ["HF_TOKEN"])
    assert "HF_TOKEN" in str(err.value) and HF not in str(err.value)
    with pytest.raises(InvalidSecretsKey) as bad:
        SecretStore(world.db, "not-a-key")
    assert "not-a-key" not in str(bad.value)
    assert not Path(str(secrets.path("alice", "j--a01"))).exists()


def _started(world: World, secrets: JobSecrets) -> tuple[str, str, Path]:
    """A task admitted and submitted, its secrets file written as the scheduler writes it."""
    tid = world.add()
    world.tick()
    sid = f"{tid}--a01"
    [attempt] = world.store.attempts(tid)
    assert attempt_user(attempt) == "alice"
    secrets.write("alice", sid, ["HF_TOKEN"])
    return tid, sid, Path(str(secrets.path("alice", sid)))


def test_the_archive_step_removes_the_file_once_the_attempt_ended(world, secrets):
    tid, sid, path = _started(world, secrets)
    world.jobs.run(sid, "step 1\n")
    world.tick()
    assert world.state(tid) == "RUNNING" and path.exists()  # its job still reads it
    world.jobs.finish(sid, "done\n")
    world.tick()
    assert world.state(tid) == "SUCCEEDED" and world.store.attempts(tid)[0].log_archived
    assert not path.exists()
    logs = (Path(world.store.attempts(tid)[0].job_root) / "logs" / "driver.log").read_text()
    assert HF not in logs


def test_a_cancelled_attempts_file_goes_even_while_ray_is_out_of_reach(world, secrets):
    tid, sid, path = _started(world, secrets)
    world.jobs.run(sid)
    world.tick()
    assert world.store.cancel(tid, world.now, "by the user")
    world.jobs.down = True  # Ray cannot be asked whether the job stopped
    world.tick()
    assert not path.exists()
    assert not world.store.attempts(tid)[0].log_archived  # the log is archived once Ray answers
    world.jobs.down = False
    world.tick()
    world.tick()
    assert world.jobs.stops == [sid] and world.store.attempts(tid)[0].log_archived


def test_an_attempt_outside_users_has_no_file_to_remove(world, secrets):
    tid, sid, path = _started(world, secrets)
    [attempt] = world.store.attempts(tid)
    from dataclasses import replace

    legacy = replace(attempt, job_root=f"{world.sandbox.shared_root}/jobs/{sid}")
    assert attempt_user(legacy) is None
    assert remove_attempt_secrets(secrets.shared_root, legacy) is False and path.exists()
    assert remove_attempt_secrets(secrets.shared_root, attempt) is True and not path.exists()
