"""The reward function's check: the script run by `LocalRewardChecker` on real files, and what
`RayRewardChecker` hands Ray (a recording client, no cluster).

Every check runs the real script in a real subprocess with the node allow-list environment;
the reward files, the train files (parquet written with pyarrow, JSON lines) and the secrets
file are real files under the test's shared root.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from argus.cluster.reward_check import LocalRewardChecker, RayRewardChecker, check_env
from argus.domain.errors import Unavailable
from argus.domain.reward import FAKE_RESPONSE, RewardCheck
from argus.runtime.reward_check import CHECK_TEXT, ensure_check_script, parse_result
from argus.spec.config import RayConfig

ROWS = [
    {"data_source": "openai/gsm8k", "answer": "42", "bonus": 0.25},
    {"data_source": "openai/gsm8k", "answer": "7", "bonus": 0.5},
    {"data_source": "lighteval/MATH", "answer": "42", "bonus": 0.0},
    {"data_source": "openai/gsm8k", "answer": "1", "bonus": 1.0},
]

GOOD = """
import re

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    found = re.findall(r"#### (\\S+)", solution_str)
    hit = 1.0 if found and found[-1] == ground_truth else 0.0
    return hit + extra_info["bonus"] + (0.125 if data_source == "openai/gsm8k" else 0.0)
"""


def expected_good(row: dict) -> float:
    hit = 1.0 if row["answer"] == FAKE_RESPONSE.split("#### ")[-1] else 0.0
    return hit + row["bonus"] + (0.125 if row["data_source"] == "openai/gsm8k" else 0.0)


def write_parquet(path: Path, rows: list[dict]) -> Path:
    table = pa.table(
        {
            "data_source": [r["data_source"] for r in rows],
            "prompt": [[{"role": "user", "content": f"question {i}"}] for i in range(len(rows))],
            "reward_model": [{"style": "rule", "ground_truth": r["answer"]} for r in rows],
            "extra_info": [{"index": i, "bonus": r["bonus"]} for i, r in enumerate(rows)],
        }
    )
    pq.write_table(table, path)
    return path


@pytest.fixture
def shared(tmp_path):
    root = tmp_path / "shared"
    code = root / "users" / "alice" / "code" / "c1"
    code.mkdir(parents=True)
    train = write_parquet(root / "train.parquet", ROWS)
    return SimpleNamespace(root=root, code=code, train=train, checker=LocalRewardChecker(str(root)))


def request(shared, body: str, **fields) -> RewardCheck:
    path = shared.code / "reward.py"
    path.write_text(body)
    base = {
        "user_id": "alice",
        "code_path": str(shared.code),
        "reward_path": str(path),
        "function": "compute_score",
        "train_file": str(shared.train),
    }
    return RewardCheck(**{**base, **fields})


# ------------------------------------------------------------------ verdicts


def test_good_reward_scores_the_first_rows(shared):
    verdict = shared.checker.check(request(shared, GOOD), timeout_s=60)
    assert verdict.ok, verdict.error
    assert verdict.scores == [expected_good(r) for r in ROWS[:3]] == [1.375, 0.625, 1.0]
    assert verdict.error == ""


def test_jsonl_train_file_and_helper_module_from_code_path(shared):
    (shared.code / "helper.py").write_text("def bonus(info):\n    return info['bonus'] * 2\n")
    train = shared.root / "train.jsonl"
    rows = [
        {"data_source": r["data_source"], "reward_model": {"ground_truth": r["answer"]}, "extra_info": {"bonus": b}}
        for r, b in zip(ROWS, [1, 2, 3, 4])
    ]
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    body = "from helper import bonus\n\ndef score(data_source, solution_str, ground_truth, extra_info=None):\n"
    body += "    return {'score': bonus(extra_info), 'acc': True}\n"
    verdict = shared.checker.check(request(shared, body, function="score", train_file=str(train), rows=2), 60)
    assert verdict.ok, verdict.error
    assert verdict.scores == [2.0, 4.0]


def test_async_reward_and_numeric_kinds(shared):
    body = "async def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kw):\n"
    body += "    return ground_truth == '42'\n"
    verdict = shared.checker.check(request(shared, body), 60)
    assert verdict.ok, verdict.error
    assert verdict.scores == [1.0, 0.0, 1.0]


def test_syntax_error(shared):
    verdict = shared.checker.check(request(shared, "def compute_score(data_source,:\n    return 1\n"), 60)
    assert not verdict.ok and verdict.scores == []
    assert "SyntaxError" in verdict.error
    assert "reward.py" in verdict.error
    assert verdict.error.splitlines()[-1].startswith("SyntaxError: ")


def test_import_error(shared):
    verdict = shared.checker.check(request(shared, "import no_such_module_xyz\n"), 60)
    assert not verdict.ok
    assert "ModuleNotFoundError: No module named 'no_such_module_xyz'" in verdict.error


def test_missing_function(shared):
    verdict = shared.checker.check(request(shared, "def other(a, b, c, d=None):\n    return 1\n"), 60)
    assert not verdict.ok
    assert verdict.error.splitlines()[-1].startswith("AttributeError: ")
    assert "defines no 'compute_score'" in verdict.error


def test_missing_reward_file(shared):
    req = request(shared, GOOD, reward_path=str(shared.code / "nope.py"))
    verdict = shared.checker.check(req, 60)
    assert not verdict.ok
    assert "FileNotFoundError: the reward file" in verdict.error and "does not exist" in verdict.error


def test_wrong_signature(shared):
    verdict = shared.checker.check(request(shared, "def compute_score(solution, answer):\n    return 1.0\n"), 60)
    assert not verdict.ok
    assert "compute_score(solution, answer) cannot be called as verl calls a reward function" in verdict.error
    assert "data_source=..., solution_str=..., ground_truth=..., extra_info=..." in verdict.error


def test_function_raises(shared):
    body = "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
    body += "    return helper(ground_truth)\n\ndef helper(gt):\n    raise ValueError(f'cannot score {gt}')\n"
    verdict = shared.checker.check(request(shared, body), 60)
    assert not verdict.ok
    lines = verdict.error.splitlines()
    assert lines[-1] == "ValueError: cannot score 42"
    assert any("in helper" in line for line in lines) and any("reward.py" in line for line in lines)
    assert "argus_reward_check" not in verdict.error  # the script's own frames are left out
    assert len(lines) <= 15


@pytest.mark.parametrize(
    ("ret", "message"),
    [
        ("'1.0'", "returned str '1.0', not a number"),
        ("None", "returned NoneType None, not a number"),
        ("{'acc': 1.0}", "without a numeric 'score'"),
        ("float('nan')", "returned nan, not a finite number"),
    ],
)
def test_non_numeric_result(shared, ret, message):
    body = f"def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n    return {ret}\n"
    verdict = shared.checker.check(request(shared, body), 60)
    assert not verdict.ok
    assert message in verdict.error and verdict.error.startswith("row 0: ")


def test_hang_past_the_call_timeout(shared):
    body = "import time\n\ndef compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
    body += "    while True:\n        try:\n            time.sleep(5)\n        except Exception:\n            pass\n"
    verdict = shared.checker.check(request(shared, body, call_timeout_s=0.5), 30)
    assert not verdict.ok
    assert verdict.error.splitlines()[-1] == (
        "TimeoutError: calling compute_score on row 0 did not finish within 0.5 s"
    )
    assert "time.sleep(5)" in verdict.error


def test_whole_check_past_its_timeout_is_unavailable(shared):
    body = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(30)\n"
    with pytest.raises(Unavailable, match=r"did not finish within 2 s"):
        shared.checker.check(request(shared, body), timeout_s=2)


def test_train_file_without_verl_columns(shared):
    train = shared.root / "plain.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "answer": ["1", "2"]}), train)
    verdict = shared.checker.check(request(shared, GOOD, train_file=str(train)), 60)
    assert not verdict.ok
    assert verdict.error == f"row 0 of {train} has no column 'data_source' (verl reads data_source)"


def test_user_output_does_not_hide_the_verdict(shared):
    body = 'print(\'ARGUS_REWARD_CHECK {"ok": false, "error": "fake"}\')\nimport sys\nsys.stdout.write(\'x\')\n'
    body += GOOD
    verdict = shared.checker.check(request(shared, body), 60)
    assert verdict.ok and verdict.scores == [expected_good(r) for r in ROWS[:3]]


# ------------------------------------------------------------------ environment and secrets


SPY = """
import os, sys

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    names = ("MY_TOKEN", "MVP_INTERNAL_TOKEN", "ARGUS_SECRETS_KEY", "ARGUS_DATABASE_URL", "TASK_VAR")
    seen = {n: os.environ.get(n) for n in names}
    seen["cwd_files"] = os.listdir(os.getcwd())
    seen["path0"] = sys.path[0]
    raise RuntimeError("SEEN " + repr(seen))
"""


def _seen(verdict) -> dict:
    import ast

    line = next(line for line in verdict.error.splitlines() if line.startswith("RuntimeError: SEEN "))
    return ast.literal_eval(line.removeprefix("RuntimeError: SEEN "))


def test_secret_reaches_the_function_and_the_file_is_removed(shared):
    body = "import os\n\ndef compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
    body += "    return float(len(os.environ['MY_TOKEN'])) + float(os.environ['TASK_VAR'])\n"
    req = request(shared, body, secrets={"MY_TOKEN": "s3cr3t-value-xyz"}, env_vars={"TASK_VAR": "0.5"})
    verdict = shared.checker.check(req, 60)
    assert verdict.ok, verdict.error
    assert verdict.scores == [16.5, 16.5, 16.5]
    secrets_dir = shared.root / "users" / "alice" / ".secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    assert list(secrets_dir.iterdir()) == []  # the check's file is gone


def test_server_environment_is_not_visible(shared, monkeypatch):
    monkeypatch.setenv("MVP_INTERNAL_TOKEN", "admin-token-of-the-server")
    monkeypatch.setenv("ARGUS_SECRETS_KEY", "fernet-key-of-the-server")
    monkeypatch.setenv("ARGUS_DATABASE_URL", "postgresql://argus:pw@db/argus")
    monkeypatch.chdir(shared.root)  # the server's working directory is not the check's
    req = request(shared, SPY, secrets={"MY_TOKEN": "tok-123456"}, env_vars={"TASK_VAR": "v"})
    verdict = shared.checker.check(req, 60)
    assert not verdict.ok
    seen = _seen(SimpleNamespace(error=verdict.error.replace("<redacted>", "tok-123456")))
    assert seen["MVP_INTERNAL_TOKEN"] is None
    assert seen["ARGUS_SECRETS_KEY"] is None
    assert seen["ARGUS_DATABASE_URL"] is None
    assert seen["TASK_VAR"] == "v" and seen["MY_TOKEN"] == "tok-123456"
    assert seen["cwd_files"] == [] and seen["path0"] == str(shared.code)


def test_secret_values_are_redacted_from_the_error(shared):
    req = request(shared, SPY, secrets={"MY_TOKEN": "tok-123456"})
    verdict = shared.checker.check(req, 60)
    assert "tok-123456" not in verdict.error and "'MY_TOKEN': '<redacted>'" in verdict.error


# ------------------------------------------------------------------ the script and its file


def test_ensure_check_script_is_idempotent(tmp_path):
    path = ensure_check_script(str(tmp_path))
    assert path == tmp_path / "common" / "argus" / "reward-check" / "argus_reward_check.py"
    assert path.read_text() == CHECK_TEXT
    mtime = path.stat().st_mtime_ns
    assert ensure_check_script(str(tmp_path)) == path and path.stat().st_mtime_ns == mtime
    assert "argus" not in [line.split()[1] for line in CHECK_TEXT.splitlines() if line.startswith("import ")]


def test_parse_result_takes_the_last_line():
    out = 'noise\nARGUS_REWARD_CHECK {"ok": false, "error": "x"}\nARGUS_REWARD_CHECK {"ok": true, "scores": [1]}\n'
    assert parse_result(out) == {"ok": True, "scores": [1]}
    assert parse_result("nothing here") is None
    assert parse_result("ARGUS_REWARD_CHECK [1]") is None


# ------------------------------------------------------------------ the Ray adapter, recording client


class RecordingClient:
    def __init__(self, statuses: list[str], logs: str):
        self.statuses = list(statuses)
        self.log = logs
        self.submitted: list[dict] = []
        self.stopped: list[str] = []
        self.secrets_seen: list[dict] = []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        path = kwargs["runtime_env"]["env_vars"].get("ARGUS_SECRETS_FILE")
        if path:
            self.secrets_seen.append({"mode": stat.S_IMODE(os.stat(path).st_mode), "values": json.load(open(path))})
        return kwargs["submission_id"]

    def get_job_info(self, sid):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return SimpleNamespace(
            submission_id=sid,
            status=status,
            message=None,
            driver_node_id="w1",
            driver_info=None,
            error_type=None,
            start_time=None,
            end_time=None,
            entrypoint="",
            metadata={},
        )

    def get_job_logs(self, sid):
        return self.log

    def stop_job(self, sid):
        self.stopped.append(sid)
        return True


def _ray_config(shared) -> RayConfig:
    return RayConfig(
        shared_root=str(shared.root),
        entrypoint_num_cpus=1,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )


def test_ray_checker_submission(shared):
    log = 'user output\nARGUS_REWARD_CHECK {"ok": true, "scores": [1.0, 0.5]}\n'
    client = RecordingClient(["PENDING", "RUNNING", "SUCCEEDED"], log)
    checker = RayRewardChecker(_ray_config(shared), client=client, poll_s=0.0)
    req = request(shared, GOOD, secrets={"MY_TOKEN": "s3cr3t-value-xyz"}, env_vars={"A": "1"}, pool="p1")
    verdict = checker.check(req, timeout_s=30)
    assert verdict.ok and verdict.scores == [1.0, 0.5]
    [kw] = client.submitted
    assert kw["submission_id"].startswith("argus-reward-check-") and len(kw["submission_id"]) == 31
    script = shared.root / "common" / "argus" / "reward-check" / "argus_reward_check.py"
    assert kw["entrypoint"].startswith(f"python3 -P {script} '{{")
    env = kw["runtime_env"]["env_vars"]
    shim = shared.root / "common" / "argus" / "pool-shim"
    assert env["PYTHONPATH"] == f"{shared.code}:{shim}" and env["PYTHONSAFEPATH"] == "1"
    assert (env["HF_HUB_OFFLINE"], env["A"]) == ("1", "1")
    assert env["ARGUS_SECRETS_FILE"].startswith(str(shared.root / "users" / "alice" / ".secrets" / "check-"))
    assert kw["entrypoint_num_cpus"] == 0.1 and kw["entrypoint_resources"] == {"worker_node": 1.0}
    assert kw["entrypoint_label_selector"] == {"pool": "p1"}
    assert kw["metadata"] == {"argus.kind": "reward-check", "argus.user": "alice"}
    assert "s3cr3t-value-xyz" not in json.dumps(kw)
    assert client.secrets_seen == [{"mode": 0o600, "values": {"MY_TOKEN": "s3cr3t-value-xyz"}}]
    assert not Path(env["ARGUS_SECRETS_FILE"]).exists()


def test_ray_checker_timeout_stops_the_job(shared):
    client = RecordingClient(["PENDING"], "")
    clock = [0.0]
    checker = RayRewardChecker(
        _ray_config(shared),
        client=client,
        poll_s=1.0,
        sleep=lambda s: clock.__setitem__(0, clock[0] + s),
        monotonic=lambda: clock[0],
    )
    with pytest.raises(Unavailable, match=r"did not finish within 5 s"):
        checker.check(request(shared, GOOD, secrets={"K": "value-1234"}), timeout_s=5)
    assert client.stopped == [client.submitted[0]["submission_id"]]
    assert list((shared.root / "users" / "alice" / ".secrets").iterdir()) == []


def test_ray_checker_without_verdict_is_unavailable(shared):
    client = RecordingClient(["FAILED"], "python3: can't open file\nleaked value-1234\n")
    checker = RayRewardChecker(_ray_config(shared), client=client, poll_s=0.0)
    with pytest.raises(Unavailable, match=r"ended FAILED without a verdict") as err:
        checker.check(request(shared, GOOD, secrets={"K": "value-1234"}), timeout_s=5)
    assert "value-1234" not in err.value.message and "leaked <redacted>" in err.value.message


def test_ray_unreachable_is_unavailable(shared):
    def unreachable(address):
        raise ConnectionError(f"cannot connect to {address}")

    checker = RayRewardChecker(_ray_config(shared))
    checker.jobs._client_factory = unreachable
    with pytest.raises(Unavailable, match="could not run on Ray: cannot reach the Ray job server"):
        checker.check(request(shared, GOOD), timeout_s=5)


def test_check_env_order(shared):
    req = request(shared, GOOD, env_vars={"PYTHONPATH": "/mine", "X": "2"})
    env = check_env(req, str(shared.root), {"X": "1", "Y": "1"})
    assert env["X"] == "2" and env["Y"] == "1"
    assert env["PYTHONPATH"].startswith(f"{shared.code}:")
