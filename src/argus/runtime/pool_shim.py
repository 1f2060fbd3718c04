"""Pool pinning inside a job: the `sitecustomize` that keeps a pool task's GPUs in its pool.

Argus pins a pool task's driver with `entrypoint_label_selector`, but the driver (verl's
`RayResourcePool`, or the stand-in) then creates placement groups for the GPUs itself, without
a label selector, and Ray would place them on any node with free GPUs. For a task with `pool`,
Argus therefore sets `ARGUS_POOL=<pool>` and puts this directory on the job's `PYTHONPATH`
(after the task's own `code_path`): at interpreter start every process of the job (driver,
verl's task runner, workers) wraps `ray.util.placement_group.placement_group` so that a
placement group made without `bundle_label_selector` gets `{"pool": <pool>}` on every bundle.

Owns the shim's text and `ensure_shim`, which writes it to
`<shared_root>/common/argus/pool-shim/sitecustomize.py` (shared storage: the same path on
every node). Invariant: the shim imports nothing of Argus, does nothing without `ARGUS_POOL`,
and never fails the process it runs in.
"""

from __future__ import annotations

import os
from pathlib import Path

SHIM_DIR = ("common", "argus", "pool-shim")
POOL_ENV = "ARGUS_POOL"

SHIM_TEXT = '''\
"""Argus pool pinning (written by Argus; see argus.runtime.pool_shim)."""
import os as _os
import sys as _sys

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
    """The directory put on a pool task's PYTHONPATH."""
    return os.path.join(shared_root, *SHIM_DIR)


def ensure_shim(shared_root: str) -> Path:
    """Write the shim under `shared_root` unless it is there already with this text.

    Returns:
        The shim's directory.
    """
    d = Path(shim_dir(shared_root))
    path = d / "sitecustomize.py"
    try:
        if path.read_text() == SHIM_TEXT:
            return d
    except OSError:
        pass
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".sitecustomize.{os.getpid()}.tmp"
    tmp.write_text(SHIM_TEXT)
    tmp.replace(path)
    return d
