"""Programs Argus puts on shared storage for jobs to run (the job shim, the reward check).

Owns `install_text`: a file written only when its text differs, through a temporary file in the
same directory renamed over it, so a node reading it at any moment sees the old text or the new
one, never a part.
"""

from __future__ import annotations

import os
from pathlib import Path


def install_text(path: Path, text: str, mode: int | None = None) -> Path:
    """Make `path` hold `text` (with `mode`, when given); nothing is written when it does already.

    Raises:
        OSError: the directory or the file could not be written.
    """
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    if mode is not None:
        os.chmod(tmp, mode)
    tmp.replace(path)
    return path
