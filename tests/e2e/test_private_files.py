"""What `argus up` and its server leave on shared storage, on a cluster and server of their own
(1 worker x 2 GPUs, `argus up` run as a user with the usual umask 022).

No file or directory Argus, its server, or a task creates under `users/`, `common/db`,
`common/run` or `common/logs` is readable by other users of the machine; `server.json` holds
neither the admin token nor any hash of it; the saved token is the owner's only (0600); and
`argus up` still prints the token of the running server, found by asking the server.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from pathlib import Path

import pytest
from test_service_cli_on_ray import _started, launch

from argus.client.sdk import ArgusClient
from argus.testing.sandbox import prepare, task_yaml

pytestmark = pytest.mark.ray
FINAL = {"SUCCEEDED", "FAILED", "CANCELED", "TIMEOUT"}


def _world_bits(root: Path) -> list[str]:
    """Every path under `root` (itself included) that others may read, write or enter."""
    return [
        f"{p} {oct(stat.S_IMODE(p.lstat().st_mode))}"
        for p in [root, *root.rglob("*")]
        if not p.is_symlink() and p.lstat().st_mode & stat.S_IRWXO
    ]


def test_up_leaves_nothing_readable_by_others_and_no_token_in_server_json(launch):
    one = launch()
    sandbox = prepare(one.root)  # the inputs, as an operator puts them under common/
    old = os.umask(0o022)  # the caller's usual umask: `argus up` narrows it for what it starts
    try:
        pid, token = _started(one, one.up())
    finally:
        os.umask(old)

    info_text = (one.run_dir / "server.json").read_text()
    digests = {hashlib.new(name, token.encode()).hexdigest() for name in ("sha256", "sha1", "md5", "sha512")}
    assert token not in info_text and not any(d in info_text for d in digests), info_text
    assert not re.search(r"[0-9a-f]{32,}", info_text), info_text  # no hash of anything
    saved = one.run_dir / "admin_token"
    assert saved.read_text().strip() == token and stat.S_IMODE(saved.stat().st_mode) == 0o600

    admin = ArgusClient(one.url, token)
    admin.create_user("alice")
    alice = ArgusClient(one.url, admin.issue_token("alice")["token"])
    tid = alice.submit(task_yaml(sandbox, "ppo", env_vars={"WANDB_API_KEY": "k-up-secret"}))["task_id"]
    deadline = time.monotonic() + 180
    while (task := alice.task(tid))["state"] not in FINAL and time.monotonic() < deadline:
        time.sleep(0.5)
    assert task["state"] == "SUCCEEDED", alice.logs(tid, tail=40)
    job_root = Path(task["latest_attempt"]["job_root"])
    archive = job_root / "logs" / "driver.log"
    while not archive.exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert archive.exists() and list((job_root / "checkpoints").glob("global_step_*"))

    for rel in ("users", "common/db", "common/run", "common/logs"):
        assert (one.root / rel).is_dir(), rel
        assert _world_bits(one.root / rel) == [], rel
    for rel in ("config/jobspec.yaml", "config/submit_payload.json", "debug/ray_job_list_post.txt"):
        assert "k-up-secret" not in (job_root / rel).read_text(), rel

    # `up` again: the running server is found, and its token named because the server takes it.
    again = one.up()
    assert f"server already running: {one.url}  (pid {pid}," in again.stdout
    assert f"admin token: {token}\n" in again.stdout
    assert token not in (one.run_dir / "server.json").read_text()
    down = one.down()
    assert down.stdout.splitlines() == ["server stopped", "cluster stopped"], down.stdout + down.stderr
