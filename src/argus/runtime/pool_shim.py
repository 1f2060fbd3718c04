"""The job-side shim: the `sitecustomize` that keeps a pool task's GPUs in its pool and hands a
job its secrets.

Pools. Argus pins a pool task's driver with `entrypoint_label_selector`, but the driver (verl's
`RayResourcePool`, or the stand-in) then creates placement groups for the GPUs itself, without
a label selector, and Ray would place them on any node with free GPUs. For a task with `pool`,
Argus therefore sets `ARGUS_POOL=<pool>` and puts this directory on the job's `PYTHONPATH`
(after the task's own `code_path`): at interpreter start every process of the job (driver,
verl's task runner, workers) wraps `ray.util.placement_group.placement_group` so that a
placement group made without `bundle_label_selector` gets `{"pool": <pool>}` on every bundle.

Secrets. For a task that names secrets, the platform writes their values to a per-attempt file
(`argus.cluster.secret_files`: a JSON object, 0600) and sets `ARGUS_SECRETS_FILE=<path>` with
this directory on `PYTHONPATH`: at interpreter start every process of the job reads the file
into `os.environ`, one variable per secret, so the values never travel in Ray's job info.
A file that cannot be read leaves one line on stderr naming the path and why (never a value),
and the process runs on without its secrets.

Owns the shim's text and `ensure_shim`, which writes it to
`<shared_root>/common/argus/pool-shim/sitecustomize.py` (shared storage: the same path on
every node). Invariant: the shim imports nothing of Argus, does nothing without `ARGUS_POOL` or
`ARGUS_SECRETS_FILE`, never prints a secret's value and never fails the process it runs in.
"""

from __future__ import annotations

import os
from pathlib import Path

from argus.runtime.files import install_text

SHIM_DIR = ("common", "argus", "pool-shim")
POOL_ENV = "ARGUS_POOL"

SHIM_TEXT = '''\
"""Argus pool pinning and job secrets (written by Argus; see argus.runtime.pool_shim)."""
import os as _os
import sys as _sys


def _argus_load_secrets(path):
    """Set each `NAME: value` of the JSON object in `path` in os.environ; print no value."""
    try:
        import json

        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
    except Exception as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        print(f"argus secrets: not loaded from {path}: {why}", file=_sys.stderr)
        return
    bad = []
    for name, value in values.items():
        try:
            if not isinstance(value, str):
                raise TypeError("not a string")
            _os.environ[name] = value
        except Exception:
            bad.append(str(name))
    if bad:
        print(f"argus secrets: could not set {', '.join(bad)} from {path}", file=_sys.stderr)


if _os.environ.get("ARGUS_SECRETS_FILE"):
    try:
        _argus_load_secrets(_os.environ["ARGUS_SECRETS_FILE"])
    except Exception:  # never break the job's interpreter
        pass

_pool = _os.environ.get("ARGUS_POOL")
if _pool:
    try:
        import ray.util.placement_group  # noqa: F401

        _mod = _sys.modules["ray.util.placement_group"]
        _orig = _mod.placement_group
        if not getattr(_orig, "_argus_pool", None):
            def placement_group(bundles, *args, **kwargs):
                if kwargs.get("bundle_label_selector") is None and len(args) < 5:
                    kwargs["bundle_label_selector"] = [{"pool": _pool} for _ in bundles]
                return _orig(bundles, *args, **kwargs)

            placement_group._argus_pool = _pool
            placement_group.__doc__ = _orig.__doc__
            _mod.placement_group = placement_group
            import ray.util as _util

            _util.placement_group = placement_group
    except Exception as _exc:  # never break the job's interpreter
        print(f"argus pool shim: not active: {_exc!r}", file=_sys.stderr)
'''


def shim_dir(shared_root: str) -> str:
    """The directory put on the PYTHONPATH of a task with a pool or with secrets."""
    return os.path.join(shared_root, *SHIM_DIR)


def ensure_shim(shared_root: str) -> Path:
    """Write the shim under `shared_root` unless it is there already with this text.

    Returns:
        The shim's directory.
    """
    d = Path(shim_dir(shared_root))
    install_text(d / "sitecustomize.py", SHIM_TEXT)
    return d
