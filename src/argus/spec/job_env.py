"""What a TaskSpec may put into its job's environment and into Hydra's quoted free text.

Owns the names Argus or verl sets itself (`RESERVED_ENV_VARS`), those refused because they would
change the loader, the interpreter, the shell, the GPUs Ray assigned or Ray itself
(`DENIED_ENV_VARS`, `DENIED_ENV_PREFIXES`), the rule for a secret's name (a secret becomes an
environment variable of the job), the names that look like credentials, and the characters free
text may not hold. Pure; `argus.spec.taskspec` applies these to a TaskSpec's fields.
"""

from __future__ import annotations

import re

# Free text goes to Hydra inside single quotes: these would end the quote or interpolate.
_UNSAFE_TEXT = ("'", "\\", "$")
# Environment variables that Argus or verl itself sets; Ray refuses a conflicting merge.
RESERVED_ENV_VARS = {
    "PYTHONPATH": "set by Argus from code_path",
    "ARGUS_POOL": "set by Argus from pool",
    "ARGUS_SECRETS_FILE": "set by Argus from secrets",
    "WANDB_RUN_ID": "set by Argus from wandb (the task id, so a retried attempt continues the run)",
    "WANDB_RESUME": "set by Argus from wandb",
    "RAY_ADDRESS": "set by Ray for the job driver",
    "VERL_FULL_DETERMINISM": "set by verl in ray.init; a conflicting value makes Ray refuse the job",
    "PYTHONHASHSEED": "set by verl in ray.init; a conflicting value makes Ray refuse the job",
}
_LOADER = "loads code into every process of the job (dynamic loader)"
_PYTHON = "changes how the job's Python interpreter starts or what it imports"
_SHELL = "changes what the job's shell runs"
_GPUS = "Ray assigns the job's GPUs; setting this would reach GPUs of other tasks"
# Variables that would change the loader, the interpreter, the shell, the GPUs Ray assigned,
# or read the control plane's secrets: refused with the reason.
DENIED_ENV_VARS = {
    "PYTHONHOME": _PYTHON,
    "PYTHONSTARTUP": _PYTHON,
    "PYTHONINSPECT": _PYTHON,
    "PYTHONUSERBASE": _PYTHON,
    "PYTHONSAFEPATH": _PYTHON,
    "PYTHONEXECUTABLE": _PYTHON,
    "PYTHONPLATLIBDIR": _PYTHON,
    "PYTHONBREAKPOINT": _PYTHON,
    "PYTHONNOUSERSITE": _PYTHON,
    "PATH": "decides which programs the job runs",
    "BASH_ENV": _SHELL,
    "ENV": _SHELL,
    "SHELLOPTS": _SHELL,
    "BASHOPTS": _SHELL,
    "IFS": _SHELL,
    "PS4": _SHELL,
    "PYTHONWARNINGS": "can import a module named in a warning filter",
    "PYTHONPYCACHEPREFIX": "decides where the job's Python reads and writes compiled modules",
    "GCONV_PATH": _LOADER,
    "GLIBC_TUNABLES": _LOADER,
    "CUDA_INJECTION64_PATH": _LOADER,
    "NCCL_NET_PLUGIN": _LOADER,
    "NCCL_TUNER_PLUGIN": _LOADER,
    "NCCL_PROFILER_PLUGIN": _LOADER,
    "CUDA_VISIBLE_DEVICES": _GPUS,
    "NVIDIA_VISIBLE_DEVICES": _GPUS,
    "HIP_VISIBLE_DEVICES": _GPUS,
    "ROCR_VISIBLE_DEVICES": _GPUS,
    "ASCEND_RT_VISIBLE_DEVICES": _GPUS,
    "MVP_INTERNAL_TOKEN": "is the control plane's admin token, never a job's",
}
DENIED_ENV_PREFIXES = {
    "LD_": _LOADER,
    "DYLD_": _LOADER,
    "RAY_": "configures Ray itself (hooks such as RAY_RUNTIME_ENV_HOOK run code in Ray's processes)",
    "ARGUS_": "is Argus's own configuration",
    "OMPI_": "configures Open MPI, which can run commands of its own (e.g. plm_rsh_agent)",
    "PMIX_": "configures PMIx, which can run commands of its own",
}


_CONTROL = re.compile("[\x00-\x1f]")


def check_free_text(value: str) -> str:
    """Refuse characters that cannot be quoted safely for Hydra."""
    bad = [c for c in _UNSAFE_TEXT if c in value]
    if bad:
        raise ValueError(f"must not contain {' '.join(repr(c) for c in bad)}")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


WANDB_KEY = "WANDB_API_KEY"
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Names that look like credentials: given in env_vars (plain text), they get a warning.
_SECRET_LIKE = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def secret_like(name: str) -> bool:
    """Whether an environment variable's name looks like it holds a credential."""
    upper = name.upper()
    return any(word in upper for word in _SECRET_LIKE)


def check_secret_name(name: str) -> str:
    """A secret becomes an environment variable of the job: the same names are refused.

    Raises:
        ValueError: not a variable name, or reserved or denied (with the reason).
    """
    if not _SECRET_NAME.fullmatch(name):
        raise ValueError(f"'{name}' is not a valid environment variable name")
    if name.startswith("WANDB_") and name != WANDB_KEY:
        raise ValueError(f"'{name}' cannot be a secret: Argus sets W&B's run from `wandb`; only {WANDB_KEY} is one")
    return check_env_name(name)


def check_env_name(name: str) -> str:
    """Refuse a job environment variable that Argus sets or that would escape the job.

    Raises:
        ValueError: the name is reserved or denied, with the reason.
    """
    if name in RESERVED_ENV_VARS:
        raise ValueError(f"'{name}' cannot be set: {RESERVED_ENV_VARS[name]}")
    reason = DENIED_ENV_VARS.get(name) or next(
        (why for prefix, why in DENIED_ENV_PREFIXES.items() if name.startswith(prefix)), None
    )
    if reason:
        raise ValueError(f"'{name}' cannot be set: it {reason}")
    return name
