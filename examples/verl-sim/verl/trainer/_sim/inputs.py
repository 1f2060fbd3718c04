"""Owns the input checks and the step count.

Messages match what the real stack prints, because Argus classifies failures
by them: a missing data file fails like HF ``datasets``
(``FileNotFoundError: Unable to find '<path>'``), a bad local model path like
``transformers`` (``OSError: <path> is not a local folder and is not a valid
model identifier listed on 'https://huggingface.co/models'``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

HF_MODELS_URL = "https://huggingface.co/models"
_LOCAL_PREFIXES = ("/", "./", "../", "~")


def check_data_files(files: Iterable[str]) -> list[Path]:
    """Every file must exist; returns them with ``~`` expanded."""
    found = []
    for name in files:
        path = Path(name).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"Unable to find '{name}'")
        found.append(path)
    return found


def looks_local(model_path: str) -> bool:
    """True for paths (``/``, ``./``, ``../``, ``~`` or an existing directory), False for hub ids."""
    return model_path.startswith(_LOCAL_PREFIXES) or os.path.isdir(model_path)


def check_model_path(model_path: str) -> bool:
    """A local model must be a directory with ``config.json``; hub ids pass unchecked.

    Returns True for a checked local model, False for a hub id (not loaded).
    """
    if not looks_local(model_path):
        return False
    path = Path(model_path).expanduser()
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise OSError(
            f"{model_path} is not a local folder and is not a valid model identifier listed on '{HF_MODELS_URL}'"
        )
    return True


def count_rows(files: Iterable[Path]) -> int | None:
    """Total rows of parquet files (from their metadata); None when unknown."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    total = 0
    for path in files:
        if path.suffix != ".parquet":
            return None
        total += pq.read_metadata(path).num_rows
    return total


def derive_total_steps(total_training_steps: int | None, total_epochs: int, rows: int, train_batch_size: int) -> int:
    """``trainer.total_training_steps`` if set, else epochs x ceil(rows / batch size)."""
    if total_training_steps is not None:
        return int(total_training_steps)
    if train_batch_size <= 0:
        raise ValueError(f"verl-sim: data.train_batch_size must be positive, got {train_batch_size}")
    return int(total_epochs) * math.ceil(rows / train_batch_size)
