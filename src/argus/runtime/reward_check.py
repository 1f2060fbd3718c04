"""The reward check's program: what runs where user code runs, never in the server.

Owns the text of a self-contained script (it imports nothing of Argus: the standard library,
and pyarrow for a parquet train file) and `ensure_check_script`, which writes it to
`<shared_root>/common/argus/reward-check/argus_reward_check.py` (shared storage: the same path
on every node). The script takes one argument, a JSON document (`check_document` builds it):

    {"reward_path", "function", "train_file", "rows", "call_timeout_s", "import_timeout_s", "response"}

It loads the reward file from its path as verl 0.9.1 does (a module of its own, named after the
file's absolute path), takes the function by name, checks that it can be called as verl's reward managers call it
(keywords `data_source`, `solution_str`, `ground_truth`, `extra_info`), reads the first rows of
the train file (`.parquet`, or JSON lines in `.jsonl`/`.json`; a `.json` array also works) and
calls the function on each with the fixed response, `call_timeout_s` for all calls together. A
result must be a real number (bool included) or a dict with a numeric `"score"`, as verl allows.

Invariant: the script prints exactly one line `ARGUS_REWARD_CHECK <json>` on its stdout, last
(what the user's code prints goes to stderr), with `{"ok": true, "scores": [...]}` or
`{"ok": false, "error": "<the traceback's last lines>"}`, and exits 0 either way; a non-zero
exit or no such line means the check itself broke. When `ARGUS_SECRETS_FILE` names a file, its
values are put into `os.environ` before the user's module is imported (the pool shim may have
done so already; doing it again changes nothing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from argus.runtime.files import install_text

CHECK_DIR = ("common", "argus", "reward-check")
SCRIPT_NAME = "argus_reward_check.py"
RESULT_MARK = "ARGUS_REWARD_CHECK"
IMPORT_TIMEOUT_S = 60.0

CHECK_TEXT = r'''"""Argus reward check (written by Argus; see argus.runtime.reward_check)."""
import asyncio
import importlib
import importlib.util
import inspect
import json
import math
import numbers
import os
import signal
import sys
import time
import traceback

MARK = "ARGUS_REWARD_CHECK"
TAIL_LINES = 15


class CheckTimeout(BaseException):
    """Raised by the alarm; a BaseException so that `except Exception` in user code lets it by."""


class Refused(Exception):
    """The function or the data is not what verl needs; the message says why."""


def _alarm(signum, frame):
    raise CheckTimeout()


def _limit(seconds):
    signal.setitimer(signal.ITIMER_REAL, max(float(seconds), 0.001))


def _unlimit():
    signal.setitimer(signal.ITIMER_REAL, 0)


def _tail(text):
    lines = text.rstrip().splitlines()
    return "\n".join(lines[-TAIL_LINES:])


def _describe(exc, last_line=None):
    """The innermost cause's traceback without this script's frames, then the outer error's line
    (verl wraps an import error in RuntimeError("Error loading module ...")), last lines only."""
    inner = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    te = traceback.TracebackException.from_exception(inner)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != __file__])
    lines = list(te.format(chain=False))
    if last_line is not None:
        lines = lines[:-1] + [last_line + "\n"]
    elif inner is not exc:
        lines += traceback.format_exception_only(type(exc), exc)
    return _tail("".join(lines))


def _load_secrets():
    path = os.environ.get("ARGUS_SECRETS_FILE")
    if not path:
        return
    with open(path) as f:
        values = json.load(f)
    for name, value in values.items():
        os.environ[str(name)] = str(value)


def load_module(path):
    """The reward file as a module of its own, as verl loads it: from the file, under a name made
    from its absolute path (so two reward files never share a module), not importable by name."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the reward file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"custom_module_{hash(os.path.abspath(path))}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the user's error, as raised, ends the traceback
    return module


def check_signature(fn, name):
    if not callable(fn):
        raise Refused(f"{name} is a {type(fn).__name__}, not a function")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call itself will tell
    try:
        sig.bind(data_source="x", solution_str="x", ground_truth="x", extra_info={})
    except TypeError as exc:
        raise Refused(
            f"{name}{sig} cannot be called as verl calls a reward function, "
            f"{name}(data_source=..., solution_str=..., ground_truth=..., extra_info=...): {exc}"
        ) from None


def read_rows(path, count):
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        columns = [c for c in ("data_source", "reward_model", "extra_info", "prompt") if c in names]
        rows = []
        for batch in pf.iter_batches(batch_size=max(count, 1), columns=columns):
            rows.extend(batch.to_pylist())
            if len(rows) >= count:
                break
        return rows[:count]
    with open(path) as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return list(json.loads(stripped))[:count]
    rows = []
    for line in text.splitlines():
        if line.strip():
            rows.append(json.loads(line))
            if len(rows) >= count:
                break
    return rows


def row_args(row, index, path):
    if not isinstance(row, dict):
        raise Refused(f"row {index} of {path} is a {type(row).__name__}, not a record")
    if "data_source" not in row:
        raise Refused(f"row {index} of {path} has no column 'data_source' (verl reads data_source)")
    rm = row.get("reward_model")
    if not isinstance(rm, dict) or "ground_truth" not in rm:
        raise Refused(f"row {index} of {path} has no reward_model.ground_truth (verl reads it for the reward)")
    extra = row.get("extra_info")
    return row["data_source"], rm["ground_truth"], dict(extra) if isinstance(extra, dict) else {}


def as_score(result, index):
    value = result["score"] if isinstance(result, dict) and "score" in result else result
    if isinstance(value, numbers.Real) and not isinstance(value, complex):
        number = float(value)
        if math.isfinite(number):
            return number
        raise Refused(f"row {index}: the reward function returned {number}, not a finite number")
    if isinstance(result, dict):
        raise Refused(f"row {index}: the reward function returned a dict without a numeric 'score': {result!r:.200}")
    raise Refused(
        f"row {index}: the reward function returned {type(value).__name__} {value!r:.200}, not a number "
        "(verl needs a float, or a dict with a float 'score')"
    )


def run(doc):
    signal.signal(signal.SIGALRM, _alarm)
    _load_secrets()
    rows = read_rows(doc["train_file"], int(doc["rows"]))
    if not rows:
        raise Refused(f"{doc['train_file']} has no rows")
    args = [row_args(row, i, doc["train_file"]) for i, row in enumerate(rows)]
    stage = "importing " + doc["reward_path"]
    limit = float(doc["import_timeout_s"])
    _limit(limit)
    try:
        module = load_module(doc["reward_path"])
        name = doc["function"]
        if not hasattr(module, name):
            path = doc["reward_path"]
            raise AttributeError(f"{path} defines no {name!r}")
        fn = getattr(module, name)
        _unlimit()
        check_signature(fn, name)
        scores = []
        limit = float(doc["call_timeout_s"])
        deadline = time.monotonic() + limit
        for i, (data_source, ground_truth, extra_info) in enumerate(args):
            stage = f"calling {name} on row {i}"
            _limit(deadline - time.monotonic())
            kwargs = dict(
                data_source=data_source, solution_str=doc["response"], ground_truth=ground_truth, extra_info=extra_info
            )
            result = asyncio.run(fn(**kwargs)) if inspect.iscoroutinefunction(fn) else fn(**kwargs)
            _unlimit()
            scores.append(as_score(result, i))
        return {"ok": True, "scores": scores}
    except CheckTimeout as exc:
        _unlimit()
        return {"ok": False, "error": _describe(exc, f"TimeoutError: {stage} did not finish within {limit:g} s")}
    finally:
        _unlimit()


def main():
    out = sys.stdout
    sys.stdout = sys.stderr  # what user code prints stays off the verdict's stream
    try:
        doc = json.loads(sys.argv[1])
        try:
            verdict = run(doc)
        except Refused as exc:
            verdict = {"ok": False, "error": str(exc)}
        except Exception as exc:
            verdict = {"ok": False, "error": _describe(exc)}
    except BaseException as exc:  # SystemExit or KeyboardInterrupt from the user's code, a bad argument
        verdict = {"ok": False, "error": _describe(exc)}
    out.write(MARK + " " + json.dumps(verdict) + "\n")
    out.flush()
    os._exit(0)  # threads or atexit handlers the user's module left must not hang or change the exit


if __name__ == "__main__":
    main()
'''


def check_dir(shared_root: str) -> str:
    """The directory the check's script lives in."""
    return os.path.join(shared_root, *CHECK_DIR)


def ensure_check_script(shared_root: str) -> Path:
    """Write the script under `shared_root` unless it is there already with this text.

    Returns:
        The script's path.
    """
    return install_text(Path(check_dir(shared_root)) / SCRIPT_NAME, CHECK_TEXT, 0o644)


def check_document(
    reward_path: str,
    function: str,
    train_file: str,
    rows: int,
    call_timeout_s: float,
    response: str,
    import_timeout_s: float = IMPORT_TIMEOUT_S,
) -> str:
    """The script's one argument, as JSON."""
    doc: dict[str, Any] = {
        "reward_path": reward_path,
        "function": function,
        "train_file": train_file,
        "rows": rows,
        "call_timeout_s": call_timeout_s,
        "import_timeout_s": import_timeout_s,
        "response": response,
    }
    return json.dumps(doc)


def parse_result(output: str) -> dict[str, Any] | None:
    """The verdict the script printed (its last `ARGUS_REWARD_CHECK` line), or None when there
    is none or it is not a JSON object."""
    prefix = RESULT_MARK + " "
    for line in reversed(output.splitlines()):
        if line.startswith(prefix):
            try:
                found = json.loads(line[len(prefix) :])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None
