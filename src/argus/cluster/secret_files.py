"""The file that hands one job (an attempt, or a reward check) its secrets.

Owns its format and modes: a JSON object `{NAME: value}` in a file of mode 0600 inside a
directory of mode 0700, written atomically (a temporary file in the same directory, renamed),
and its removal. The job-side shim (`argus.runtime.pool_shim`) reads the file named by
`ARGUS_SECRETS_FILE` into each process's environment at interpreter start; the platform removes
the file when the attempt ends. The values never go anywhere else: not into Ray's job info, the
job directory or a log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

SECRETS_FILE_ENV = "ARGUS_SECRETS_FILE"
DIR_MODE = 0o700
FILE_MODE = 0o600


def write_secrets_file(path: str | os.PathLike[str], values: Mapping[str, str]) -> Path:
    """Write `values` to `path` (0600, its directory made 0700), replacing an older file.

    Raises:
        OSError: the directory or the file could not be written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(target.parent, DIR_MODE)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), FILE_MODE)
            json.dump(dict(values), f)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def remove_secrets_file(path: str | os.PathLike[str]) -> bool:
    """Remove the file; False when it was not there."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
