"""classify_failure on real message texts from verl, Hydra, pyarrow, transformers, torch and Ray."""

from __future__ import annotations

import pytest

from argus.domain.failure import Diagnosis, FailureCause, classify_failure

# Ray's JobInfo.message for a failed entrypoint: a fixed first line, then the log's end.
RAY_HEAD = "Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\n"
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "<frozen runpy>", line 198, in _run_module_as_main\n'
    '  File "<frozen runpy>", line 88, in _run_code\n'
    '  File "/usr/local/lib/python3.11/site-packages/verl/trainer/main_ppo.py", line 42, in main\n'
    "    run_ppo(config)\n"
    '  File "/usr/local/lib/python3.11/site-packages/ray/_private/worker.py", line 2771, in get\n'
    "    raise value.as_instanceof_cause()\n"
)
STARTUP = (
    "2025-03-04 05:06:07,123\tINFO worker.py:1654 -- Connecting to existing Ray cluster at "
    "address: 127.0.0.2:6379...\n"
    "2025-03-04 05:06:07,456\tINFO worker.py:1832 -- Connected to Ray cluster. View the "
    "dashboard at 127.0.0.1:8265\n"
    "(TaskRunner pid=4242) TaskRunner hostname: worker-1, PID: 4242\n"
)


def ray_message(last_lines: str) -> str:
    return RAY_HEAD + STARTUP + TRACEBACK + last_lines


def diagnose(message: str | None = None, log: str | None = None, error_type: str | None = None):
    diag = classify_failure("FAILED", message, log, error_type)
    assert isinstance(diag, Diagnosis)
    return diag


GPU_4_8 = "ValueError: Total available GPUs 4.0 is less than total desired GPUs 8"
GPU_0_2 = "ValueError: Total available GPUs 0 is less than total desired GPUs 2"
HYDRA = "hydra.errors.ConfigCompositionException: Could not override 'trainer.totl_epochs'."
DATA_FNF = "FileNotFoundError: Unable to find '/data/train.parquet'"
DATA_ARROW = (
    "pyarrow.lib.ArrowInvalid: Parquet magic bytes not found in footer. "
    "Either the file is corrupted or this is not a parquet file."
)
MODEL = (
    "OSError: /m is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'"
)
OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
    "capacity of 79.25 GiB of which 1.12 GiB is free. Including non-PyTorch memory, this process "
    "has 78.12 GiB memory in use."
)
NCCL = (
    "torch.distributed.DistBackendError: NCCL error in: "
    "../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1970, unhandled system error "
    "(run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5"
)
USER = "ModuleNotFoundError: No module named 'my_reward'"


@pytest.mark.parametrize("line", [GPU_4_8, GPU_0_2])
def test_verl_gpu_check_is_insufficient_resources(line):
    tail = (
        "ray.exceptions.RayTaskError(ValueError): ray::TaskRunner.run() "
        "(pid=4242, ip=127.0.0.3, actor_id=a1b2, repr=<main_ppo.TaskRunner object at 0x7f>)\n"
        '  File "/usr/local/lib/python3.11/site-packages/verl/single_controller/ray/base.py", '
        "line 241, in _check_resource_available\n"
        "    raise ValueError(\n"
        f"{line}\n"
    )
    diag = diagnose(ray_message(tail))
    assert diag.cause is FailureCause.INSUFFICIENT_RESOURCES
    assert diag.evidence == line
    assert str(diag) == f"INSUFFICIENT_RESOURCES: {line}"


def test_gpu_message_in_log_tail_only():
    diag = diagnose("Job entrypoint command failed with exit code 1", STARTUP + TRACEBACK + GPU_0_2 + "\n")
    assert (diag.cause, diag.evidence) == (FailureCause.INSUFFICIENT_RESOURCES, GPU_0_2)


def test_hydra_override_error_is_config():
    tail = (
        "Error executing job with overrides: ['trainer.totl_epochs=3']\n"
        + TRACEBACK
        + HYDRA
        + "\nTo append to your config use +trainer.totl_epochs=3\n\n"
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    )
    diag = diagnose(RAY_HEAD + tail)
    assert diag.cause is FailureCause.CONFIG
    assert diag.evidence == HYDRA


@pytest.mark.parametrize("line", [DATA_FNF, DATA_ARROW])
def test_missing_or_corrupt_data_is_data(line):
    error_name = line.split(":")[0].split(".")[-1]
    tail = f"ray.exceptions.RayTaskError({error_name}): ray::TaskRunner.run() (pid=4242)\n{line}\n"
    diag = diagnose(ray_message(tail))
    assert diag.cause is FailureCause.DATA
    assert diag.evidence == line


def test_short_arrow_message_is_data():
    line = "pyarrow.lib.ArrowInvalid: Parquet magic bytes not found in footer"
    assert diagnose(ray_message(line + "\n")) == Diagnosis(FailureCause.DATA, line)


def test_hf_model_identifier_is_model():
    tail = (
        MODEL + "\n"
        "If this is a private repository, make sure to pass a token having permission to this "
        "repo either by logging in with `huggingface-cli login` or by passing `token=<your_token>`\n"
    )
    diag = diagnose(ray_message(tail))
    assert diag.cause is FailureCause.MODEL
    assert diag.evidence == MODEL


def test_cuda_oom_is_oom():
    diag = diagnose(ray_message(OOM + "\n"))
    assert diag.cause is FailureCause.OOM
    assert diag.evidence == OOM


def test_nccl_error_is_nccl():
    diag = diagnose(ray_message(NCCL + "\n"))
    assert diag.cause is FailureCause.NCCL
    assert diag.evidence == NCCL


def test_runtime_env_setup_error_is_platform():
    message = (
        "ray.exceptions.RuntimeEnvSetupError: Failed to set up runtime environment.\n"
        "Could not create the actor because its associated runtime env failed to be created.\n"
    )
    assert diagnose(message) == Diagnosis(
        FailureCause.PLATFORM,
        "ray.exceptions.RuntimeEnvSetupError: Failed to set up runtime environment.",
    )


def test_runtime_env_setup_error_in_log_tail_is_platform():
    log = STARTUP + "RuntimeEnvSetupError: pip install of 'vllm' failed\n"
    assert diagnose(RAY_HEAD, log) == Diagnosis(
        FailureCause.PLATFORM, "RuntimeEnvSetupError: pip install of 'vllm' failed"
    )


@pytest.mark.parametrize(
    "error_type",
    ["RUNTIME_ENV_SETUP_FAILURE", "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE", "JOB_SUPERVISOR_ACTOR_DIED"],
)
def test_platform_error_type_without_log_is_platform(error_type):
    diag = diagnose(None, None, error_type)
    assert diag == Diagnosis(FailureCause.PLATFORM, f"Ray error type {error_type}")


def test_platform_error_type_beats_user_code_lines():
    diag = diagnose("ValueError: boom", None, "RUNTIME_ENV_SETUP_FAILURE")
    assert diag == Diagnosis(FailureCause.PLATFORM, "Ray error type RUNTIME_ENV_SETUP_FAILURE")


def test_non_platform_error_type_does_not_force_platform():
    diag = diagnose(ray_message(USER + "\n"), None, "JOB_ENTRYPOINT_COMMAND_ERROR")
    assert diag.cause is FailureCause.USER_CODE


def test_plain_traceback_is_user_code():
    tail = f'  File "/srv/shared/user/code/my_pkg/reward.py", line 3, in <module>\n    import my_reward\n{USER}\n'
    diag = diagnose(ray_message(tail))
    assert diag.cause is FailureCause.USER_CODE
    assert diag.evidence == USER


def test_bare_traceback_line_is_user_code():
    diag = diagnose(RAY_HEAD + "Traceback (most recent call last):\n")
    assert diag == Diagnosis(FailureCause.USER_CODE, "Traceback (most recent call last):")


def test_empty_message_is_unknown():
    assert diagnose("") == Diagnosis(FailureCause.UNKNOWN, "no message from Ray")
    assert diagnose(None, "") == Diagnosis(FailureCause.UNKNOWN, "no message from Ray")


def test_unrecognised_message_is_unknown_with_last_line():
    diag = diagnose("Job entrypoint command failed with exit code 137, last available logs:\nsome output")
    assert diag == Diagnosis(FailureCause.UNKNOWN, "some output")


@pytest.mark.parametrize("status", ["SUCCEEDED", "STOPPED", "RUNNING", "PENDING"])
def test_not_failed_gives_none(status):
    assert classify_failure(status, ray_message(GPU_4_8)) is None


def test_status_is_case_insensitive():
    assert classify_failure("failed", GPU_4_8).cause is FailureCause.INSUFFICIENT_RESOURCES


# -- rule order and "last line wins" -----------------------------------------------------------
def test_early_warning_then_final_error_final_cause_wins():
    log = (
        STARTUP + "(WorkerDict pid=77, ip=127.0.0.3) /usr/local/lib/python3.11/site-packages/torch/cuda/"
        "__init__.py:734: UserWarning: Can't initialize NVML\n"
        "(TaskRunner pid=4242) FutureWarning: `torch.cuda.amp.autocast(args...)` is deprecated.\n"
        + TRACEBACK
        + GPU_4_8
        + "\n"
    )
    diag = diagnose(RAY_HEAD + log)
    assert diag == Diagnosis(FailureCause.INSUFFICIENT_RESOURCES, GPU_4_8)


def test_early_lower_rule_match_loses_to_final_higher_rule():
    # An early traceback of a caught user error (USER_CODE) and a final CUDA OOM: OOM wins.
    log = TRACEBACK + "KeyError: 'reward'\n" + "retrying...\n" + TRACEBACK + OOM + "\n"
    assert diagnose(RAY_HEAD + log) == Diagnosis(FailureCause.OOM, OOM)


def test_within_a_rule_the_last_matching_line_wins():
    early = "FileNotFoundError: Unable to find '/data/old.parquet'"
    log = early + "\nfalling back to the new path\n" + TRACEBACK + DATA_ARROW + "\n"
    assert diagnose(RAY_HEAD + log) == Diagnosis(FailureCause.DATA, DATA_ARROW)


def test_message_and_log_tail_are_both_searched():
    diag = diagnose(RAY_HEAD + "ValueError: x\n", STARTUP + TRACEBACK + NCCL + "\n")
    assert (diag.cause, diag.evidence) == (FailureCause.NCCL, NCCL)


def test_evidence_is_stripped_and_capped():
    long_line = "   " + GPU_4_8 + " " + "x" * 1000 + "   "
    diag = diagnose(long_line)
    assert diag.cause is FailureCause.INSUFFICIENT_RESOURCES
    assert diag.evidence.startswith("ValueError: Total available GPUs")
    assert len(diag.evidence) == 500


TORCH_EXIT_WARNING = (
    "(WorkerDict pid=2311, ip=127.0.0.3) [rank0]:[W304 05:09:12.380967152 "
    "ProcessGroupNCCL.cpp:1250] Warning: WARNING: process group has NOT been destroyed before we "
    "destruct ProcessGroupNCCL. On normal program exit, the application should call "
    "destroy_process_group to ensure that any pending NCCL operations have finished in this "
    "process. In rare cases this process can exit before this point and block the progress of "
    "another member of the process group. This constraint has always been present,  but this "
    "warning has only been added since PyTorch 2.4 (function operator())"
)


def test_torch_process_group_exit_warning_is_not_an_nccl_failure():
    log = STARTUP + TRACEBACK + USER + "\n" + TORCH_EXIT_WARNING + "\n"
    diag = diagnose(RAY_HEAD + log)
    assert diag == Diagnosis(FailureCause.USER_CODE, USER)
