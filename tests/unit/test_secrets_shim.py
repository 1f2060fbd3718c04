"""The job side of secrets: the shim a job's processes start with reads the per-attempt file into
their environment (a real `python3` child each time), and the server's key that `argus up` makes.

The child sees each secret as an environment variable, and so do the processes it starts; a file
that is missing or broken leaves one line on stderr naming the path, never a value, and the
child runs on. The key file is made once (0600), reused, and the environment's key wins.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from argus.cluster.secret_files import SECRETS_FILE_ENV, write_secrets_file
from argus.runtime.pool_shim import ensure_shim
from argus.service import launcher

VALUE = "hf_5a1c9e-SECRET-VALUE-77d0"
OTHER = "wandb-SECRET-VALUE-2b8f with spaces, quotes ' \" and\nlines"
PROBE = (
    "import json, os, subprocess, sys\n"
    "names = ['HF_TOKEN', 'WANDB_API_KEY']\n"
    "mine = {n: os.environ.get(n) for n in names}\n"
    "child = subprocess.run([sys.executable, '-c', 'import json, os; print(json.dumps("
    '{n: os.environ.get(n) for n in ["HF_TOKEN", "WANDB_API_KEY"]}))\'], capture_output=True, text=True)\n'
    "print(json.dumps({'mine': mine, 'child': json.loads(child.stdout)}))\n"
)


def _run(shim: Path, secrets_file: str | None, probe: str = PROBE) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "WANDB_API_KEY", SECRETS_FILE_ENV)}
    env["PYTHONPATH"] = str(shim)
    if secrets_file is not None:
        env[SECRETS_FILE_ENV] = secrets_file
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)


def test_every_process_of_the_job_gets_the_secrets_as_environment_variables(tmp_path):
    shim = ensure_shim(str(tmp_path))
    path = write_secrets_file(tmp_path / "users" / "alice" / ".secrets" / "j--a01.json", {"HF_TOKEN": VALUE})
    out = _run(shim, str(path))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert json.loads(out.stdout) == {
        "mine": {"HF_TOKEN": VALUE, "WANDB_API_KEY": None},
        "child": {"HF_TOKEN": VALUE, "WANDB_API_KEY": None},
    }
    write_secrets_file(path, {"HF_TOKEN": VALUE, "WANDB_API_KEY": OTHER})  # any text survives as it is
    out = _run(shim, str(path))
    assert json.loads(out.stdout)["mine"] == {"HF_TOKEN": VALUE, "WANDB_API_KEY": OTHER}, out.stderr


def test_without_the_variable_the_shim_does_nothing(tmp_path):
    out = _run(ensure_shim(str(tmp_path)), None)
    assert out.returncode == 0 and out.stderr == ""
    assert json.loads(out.stdout)["mine"] == {"HF_TOKEN": None, "WANDB_API_KEY": None}


def test_a_missing_file_leaves_one_line_naming_it_and_the_job_runs_on(tmp_path):
    missing = tmp_path / "users" / "alice" / ".secrets" / "gone.json"
    out = _run(ensure_shim(str(tmp_path)), str(missing))
    assert out.returncode == 0
    assert json.loads(out.stdout)["mine"] == {"HF_TOKEN": None, "WANDB_API_KEY": None}
    assert out.stderr.splitlines() == [f"argus secrets: not loaded from {missing}: No such file or directory"]


def test_a_broken_file_never_shows_what_it_holds(tmp_path):
    shim = ensure_shim(str(tmp_path))
    broken = tmp_path / "broken.json"
    for text in (f'{{"HF_TOKEN": "{VALUE}"', f'["{VALUE}"]', f"{VALUE}"):
        broken.write_text(text)
        out = _run(shim, str(broken))
        assert out.returncode == 0 and json.loads(out.stdout)["mine"]["HF_TOKEN"] is None
        assert len(out.stderr.splitlines()) == 1 and str(broken) in out.stderr and VALUE not in out.stderr, out.stderr
    broken.write_bytes(b'{"HF_TOKEN": "\xff' + VALUE.encode() + b'"}')
    out = _run(shim, str(broken))
    assert out.returncode == 0 and VALUE not in out.stderr and "UnicodeDecodeError" in out.stderr
    # A value no environment can hold is skipped by name; the others are set.
    broken.write_text(json.dumps({"HF_TOKEN": VALUE, "WANDB_API_KEY": f"a\x00{VALUE}"}))
    out = _run(shim, str(broken))
    assert json.loads(out.stdout)["mine"] == {"HF_TOKEN": VALUE, "WANDB_API_KEY": None}
    assert out.stderr.strip() == f"argus secrets: could not set WANDB_API_KEY from {broken}"


def test_an_unreadable_file_is_reported_by_path(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = write_secrets_file(tmp_path / "s.json", {"HF_TOKEN": VALUE})
    os.chmod(path, 0)
    out = _run(ensure_shim(str(tmp_path)), str(path))
    assert out.returncode == 0 and out.stderr.strip() == f"argus secrets: not loaded from {path}: Permission denied"


def test_up_makes_the_servers_key_once_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("ARGUS_SECRETS_KEY", raising=False)
    key = launcher.secrets_key(tmp_path)
    path = tmp_path / "common" / "run" / "secrets_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == key + "\n"
    Fernet(key.encode())  # a usable key
    assert launcher.secrets_key(tmp_path) == key  # made once, then reused
    os.chmod(path, 0o644)
    assert launcher.secrets_key(tmp_path) == key and stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.setenv("ARGUS_SECRETS_KEY", "from-the-environment")
    assert launcher.secrets_key(tmp_path) == "from-the-environment"
    assert path.read_text() == key + "\n"


def test_the_server_gets_the_key_in_its_environment_only(tmp_path, monkeypatch):
    """`_start_server` puts the key in the child's environment, not on its command line."""
    seen: dict = {}

    class Popen:
        def __init__(self, args, **kw):
            seen["args"], seen["env"] = args, kw["env"]

    monkeypatch.setattr(launcher.subprocess, "Popen", Popen)
    (tmp_path / "common" / "run").mkdir(parents=True)
    settings = launcher.parse_settings({"ray": {"shared_root": str(tmp_path)}}, environ={})
    launcher._start_server(str(tmp_path), settings, "tok", "the-key", tmp_path / "c.yaml", tmp_path / "log")
    assert seen["env"]["ARGUS_SECRETS_KEY"] == "the-key" and seen["env"]["MVP_INTERNAL_TOKEN"] == "tok"
    assert "the-key" not in " ".join(seen["args"])
