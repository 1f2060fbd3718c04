"""Shared fixtures: one real local Ray cluster per test session, started by the project.

The cluster is only started when a test asks for it (tests/ray and tests/e2e), on free ports
and a shared root of its own, so it never touches a demo cluster running on the same machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from argus.cluster import local
from argus.cluster.local import port_free


def _free_pair(start: int) -> tuple[int, int]:
    port = start
    while not (port_free(port) and port_free(port + 1900)):
        port += 1
    return port, port + 1900


def _running(proc) -> bool:
    import psutil

    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# What a careless or hostile caller of `argus up` may have around it: the admin token in its
# environment and modules in its working directory named like a task's or Python's own. The
# session cluster is started from there, so every Ray test runs on nodes that must ignore both.
HOSTILE_ADMIN_TOKEN = "hostile-admin-token-in-the-callers-environment"
SHADOW_MARKER = "shadow-from-the-callers-cwd"


def hostile_cwd(directory: Path) -> Path:
    """A working directory whose `mvp_marker.py` and `secrets.py` would shadow a task's own
    marker and Python's `secrets` for any process that put it first on `sys.path`; each writes
    a file named after itself into `directory/imported/` when imported."""
    (directory / "imported").mkdir(parents=True, exist_ok=True)
    for name, body in (("mvp_marker", f'MARKER = "{SHADOW_MARKER}"\n'), ("secrets", "")):
        (directory / f"{name}.py").write_text(
            f"import pathlib\npathlib.Path(__file__).with_name('imported').joinpath('{name}').write_text('x')\n" + body
        )
    return directory


@pytest.fixture(scope="session")
def ray_cluster():
    """A head (0 CPU, 0 GPU) and 2 workers x 4 logical GPUs; yields its ClusterState.

    Started from a hostile caller (`hostile_cwd`, the admin token in the environment), as a
    careless operator might run `argus up`."""
    root = Path(tempfile.mkdtemp(prefix="argus-test-"))
    gcs, dash = _free_pair(6390)
    t0 = time.monotonic()
    cwd, token = os.getcwd(), os.environ.get("MVP_INTERNAL_TOKEN")
    os.environ["MVP_INTERNAL_TOKEN"] = HOSTILE_ADMIN_TOKEN
    os.chdir(hostile_cwd(root / "caller-cwd"))
    try:
        state, _ = local.up(
            str(root), workers=2, gpus_per_worker=4, cpus_per_worker=4, gcs_port=gcs, dashboard_port=dash
        )
    finally:
        os.chdir(cwd)
        if token is None:
            os.environ.pop("MVP_INTERNAL_TOKEN", None)
        else:
            os.environ["MVP_INTERNAL_TOKEN"] = token
    print(f"\nlocal Ray cluster up in {time.monotonic() - t0:.1f}s at {state.dashboard_url}")
    try:
        yield state
    finally:
        assert local.down(str(root)) is True
        # `down` stopped exactly this cluster: none of its processes is left, nothing is recorded.
        left = [p.pid for p in local._by_temp_dir(state.temp_dir) if _running(p)]
        assert not left, f"processes left after cluster down: {left}"
        assert local.status(str(root)) is None
        if not os.environ.get("ARGUS_KEEP_TEST_ROOT"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def idle_cluster(ray_cluster):
    """The session cluster with no live job and every GPU free."""
    from argus.testing.cluster import quiesce

    quiesce(ray_cluster)
    return ray_cluster


@pytest.fixture(scope="session")
def sandbox(ray_cluster):
    from argus.testing.sandbox import prepare

    return prepare(ray_cluster.shared_root)


@pytest.fixture(scope="session")
def ray_config(ray_cluster):
    from argus.spec.config import load_ray_config

    cfg, _ = load_ray_config(local.config_file(ray_cluster.shared_root))
    return cfg
