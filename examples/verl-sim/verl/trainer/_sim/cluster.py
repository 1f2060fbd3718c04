"""Owns everything that talks to Ray.

- :func:`connect`: plain ``ray.init()`` (``RAY_ADDRESS`` comes from the job's env).
- :func:`check_resource_available`: verl 0.9.1's GPU pre-check
  (``RayResourcePool`` manager ``_check_resource_available``), same arithmetic
  and the same ``ValueError`` text, which Argus' classifier and scheduler match.
- :func:`acquire_gpus` / :func:`release`: the GPUs as a placement group of
  ``nnodes`` bundles of ``{"GPU": n_gpus_per_node}``.
- :func:`start_workers` / :func:`run_step`: one zero-CPU actor per bundle holding that
  bundle's GPUs for the whole run (as verl's workers are), called once per step.
- :func:`score_step`: a step's rewards computed in the first bundle's worker (a Ray worker
  process of the job, as verl's reward workers are), which loads the reward file itself.
"""

from __future__ import annotations

import os
import time

from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

import ray


def connect() -> str:
    """Connect the driver to the cluster; returns the driver's node id."""
    if not ray.is_initialized():
        ray.init()
    return ray.get_runtime_context().get_node_id()


def check_resource_available(nnodes: int, n_gpus_per_node: int) -> None:
    """Fail like verl when the cluster's *available* GPUs are fewer than requested."""
    per_node = ray._private.state.available_resources_per_node()
    node_available_gpus = {
        node: info.get("GPU", 0) if "GPU" in info else info.get("NPU", 0) for node, info in per_node.items()
    }
    total_available_gpus = sum(node_available_gpus.values())
    total_required_gpus = sum([n_gpus_per_node] * nnodes)
    if total_available_gpus < total_required_gpus:
        raise ValueError(
            f"Total available GPUs {total_available_gpus} is less than total desired GPUs {total_required_gpus}"
        )


def acquire_gpus(nnodes: int, n_gpus_per_node: int, timeout_s: float) -> PlacementGroup:
    """Reserve the GPUs; STRICT_SPREAD over nodes when nnodes > 1, else PACK."""
    if nnodes < 1 or n_gpus_per_node < 1:
        raise ValueError(f"verl-sim: need nnodes >= 1 and n_gpus_per_node >= 1, got {nnodes} x {n_gpus_per_node}")
    strategy = "STRICT_SPREAD" if nnodes > 1 else "PACK"
    bundles = [{"GPU": n_gpus_per_node} for _ in range(nnodes)]
    pg = placement_group(bundles, strategy=strategy, name=f"verl-sim-{os.getpid()}")
    if not pg.wait(timeout_seconds=timeout_s):
        release(pg)
        raise RuntimeError(
            f"verl-sim: placement group {bundles} (strategy {strategy}) could not be placed within "
            f"{timeout_s:g}s: the cluster lacks {nnodes} node(s) with {n_gpus_per_node} free GPU(s) each"
        )
    return pg


def release(pg: PlacementGroup) -> None:
    try:
        remove_placement_group(pg)
    except Exception as exc:  # never mask the original failure
        print(f"verl-sim: could not remove placement group: {exc!r}", flush=True)


@ray.remote
class _BundleWorker:
    """One worker per bundle, holding its GPUs for the whole run, like verl's worker actors."""

    def __init__(self) -> None:
        self._reward: dict[tuple[str | None, str], object] = {}

    def step(self, seconds: float) -> tuple[str, str | None]:
        time.sleep(seconds)
        return ray.get_runtime_context().get_node_id(), os.environ.get("CUDA_VISIBLE_DEVICES")

    def score(self, path: str | None, name: str, calls: list[dict]) -> float:
        """The mean reward of ``calls``, the function loaded here from ``path`` (None: the default)."""
        from .reward import default_score, load_reward_fn, mean_score

        key = (path, name)
        if key not in self._reward:
            self._reward[key] = load_reward_fn(path, name) if path else default_score
        return mean_score(self._reward[key], calls)  # type: ignore[arg-type]


def start_workers(pg: PlacementGroup, nnodes: int, n_gpus_per_node: int) -> list:
    """One zero-CPU actor per bundle, holding that bundle's GPUs until the run ends."""
    return [
        _BundleWorker.options(
            num_cpus=0,
            num_gpus=n_gpus_per_node,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i),
        ).remote()
        for i in range(nnodes)
    ]


def score_step(workers: list, scorer, step: int) -> float:
    """The step's mean reward, computed by the first worker (in this process when there is none)."""
    if not workers:
        return scorer.step_mean(step)
    return ray.get(workers[0].score.remote(scorer.path, scorer.name, scorer.step_calls(step)))


def run_step(workers: list, seconds: float) -> list[tuple[str, str | None]]:
    """One fake step: a call on every bundle's worker; returns (node id, CUDA_VISIBLE_DEVICES) each."""
    return ray.get([w.step.remote(seconds) for w in workers])
