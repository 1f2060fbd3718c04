"""An attempt lost with its Ray head: its log comes from the old Ray session directory, or says
plainly that it was lost. The scheduler over a real SQLite store, the job server faked, and a
Ray temp dir laid out as Ray leaves it (`session_<date>_<pid>/logs/job-driver-<id>.log`) at the
very path Argus starts the local cluster's Ray with."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timezone
from pathlib import Path

import pytest
from test_scheduler import World

from argus.cluster import head
from argus.cluster.session_logs import MAX_LOG_BYTES, find_driver_log, ray_temp_dirs
from argus.service.auth import Identity
from argus.service.task_service import TaskService
from argus.settings import parse_settings


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from argus.testing.sandbox import prepare

    return prepare(tmp_path_factory.mktemp("shared"))


@pytest.fixture
def ray_temp(sandbox):
    """The local cluster's Ray temp dir for this sandbox (a /tmp path of its own), removed after."""
    path = Path(head.temp_dir_for(sandbox.shared_root, "local"))
    assert not path.exists()
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _old_session(temp: Path, sid: str, text: str, name: str = "session_2027-01-15_08-00-00_000001") -> Path:
    logs = temp / name / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"job-driver-{sid}.log"
    path.write_text(text)
    return path


def _lose(world: World) -> tuple[str, str]:
    tid = world.add()
    world.tick()
    sid = f"{tid}--a01"
    world.jobs.run(sid, "step 1\n")
    world.tick()
    world.jobs.lose_all()  # the head restarted without its job table
    world.tick()  # LOST, retried as attempt 2; the archive pass follows in the next one
    world.tick()
    return tid, sid


def _next_sid(world: World) -> str:
    """The submission id of the next task `world.add()` makes (alice's ppo, attempt 1)."""
    return f"mvp2-alice-ppo-20270115-080000-{world.n + 1:04x}--a01"


def test_a_lost_attempt_log_is_archived_from_the_old_session_directory(sandbox, tmp_path, ray_temp):
    world = World(sandbox, tmp_path)
    _old_session(ray_temp, _next_sid(world), "step 1\nstep 2 before the head died\n")
    _old_session(
        ray_temp,
        "mvp2-alice-ppo-20270115-080000-00ff--a01",
        "not this one\n",
        "session_2027-01-15_09-00-00_000002",
    )
    tid, sid = _lose(world)
    first = world.store.attempt(tid, 1)
    assert first.ray_status == "LOST" and first.log_archived
    log = Path(first.job_root) / "logs" / "driver.log"
    text = log.read_text()
    assert text.startswith("step 1\nstep 2 before the head died\n")
    assert "the Ray head lost this job" in text and "session_2027-01-15_08-00-00_000001" in text
    assert "not this one" not in text
    assert log.stat().st_mode & 0o777 == 0o640


def test_a_lost_attempt_without_a_session_log_says_it_was_lost(sandbox, tmp_path, ray_temp):
    world = World(sandbox, tmp_path)
    tid, sid = _lose(world)
    first = world.store.attempt(tid, 1)
    text = (Path(first.job_root) / "logs" / "driver.log").read_text()
    when = datetime.fromtimestamp(first.end_time, tz=UTC).isoformat(timespec="seconds")
    assert text == (
        f"[argus] the driver log of {sid} was lost with the Ray head: Ray no longer "
        f"knew the job at {when}, and no old Ray session directory holds its log\n"
    )


def test_the_log_route_serves_the_lost_attempts_archive(sandbox, tmp_path, ray_temp):
    world = World(sandbox, tmp_path)
    _old_session(ray_temp, _next_sid(world), "the real driver log\n")
    tid, sid = _lose(world)
    service = TaskService(
        world.settings,
        world.store,
        world.jobs,
        nudge=lambda **_: None,
        clock=world.clock,
        check_pool=object(),
    )
    text = service.logs(Identity("alice", False), tid, "1", None)
    assert text.startswith("the real driver log\n")  # before: an empty 200


# -- the search itself: bounded and safe ----------------------------------------------------
def test_only_a_regular_file_named_for_that_exact_id_is_read(tmp_path):
    temp = tmp_path / "ray"
    secret = tmp_path / "secret.txt"
    secret.write_text("not a log\n")
    logs = temp / "session_1" / "logs"
    logs.mkdir(parents=True)
    os.symlink(secret, logs / "job-driver-t1--a01.log")
    assert find_driver_log("t1--a01", [temp]) is None  # a link is never followed
    (logs / "job-driver-t2--a01.log").write_text("two\n")
    assert find_driver_log("t2--a01", [temp]).text == "two\n"
    for bad in ("../session_1/logs/job-driver-t2--a01", "t2*", "", "a/b", ".."):
        assert find_driver_log(bad, [temp]) is None
    assert find_driver_log("t2--a0", [temp]) is None  # a prefix is not the id


def test_a_huge_log_is_cut_to_its_end(tmp_path):
    logs = tmp_path / "session_1" / "logs"
    logs.mkdir(parents=True)
    (logs / "job-driver-big--a01.log").write_bytes(b"x" * MAX_LOG_BYTES + b"THE END\n")
    found = find_driver_log("big--a01", [tmp_path])
    assert found.truncated and found.text.endswith("THE END\n") and len(found.text) == MAX_LOG_BYTES


def test_temp_dirs_are_the_named_clusters_the_local_ones_and_rays_default(tmp_path):
    settings = parse_settings({"ray": {"shared_root": str(tmp_path), "cluster_name": "prod"}}, environ={})
    dirs = ray_temp_dirs(settings.ray)
    assert dirs == [head.temp_dir_for(tmp_path, "prod"), head.temp_dir_for(tmp_path, "local"), "/tmp/ray"]
