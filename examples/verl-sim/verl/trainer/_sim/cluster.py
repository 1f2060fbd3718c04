"""Owns everything that talks to Ray.

- :func:`connect`: plain ``ray.init()`` (``RAY_ADDRESS`` comes from the job's env).
- :func:`check_resource_available`: verl 0.9.1's GPU pre-check
  (``RayResourcePool`` manager ``_check_resource_available``), same arithmetic
  and the same ``ValueError`` text, which Argus' classifier and scheduler match.
- :func:`acquire_gpus` / :func:`release`: the GPUs as a placement group of
  ``nnodes`` bundles of ``{"GPU": n_gpus_per_node}``.
- :func:`run_step`: one zero-CPU task per bundle holding that bundle's GPUs.
"""

from __future__ import annotations

import os
import time

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


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
def _fake_step(seconds: float) -> tuple[str, str | None]:
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id(), os.environ.get("CUDA_VISIBLE_DEVICES")


def run_step(pg: PlacementGroup, nnodes: int, n_gpus_per_node: int, seconds: float) -> list[tuple[str, str | None]]:
    """One fake step: a task per bundle; returns (node id, CUDA_VISIBLE_DEVICES) per bundle."""
    refs = [
        _fake_step.options(
            num_cpus=0,
            num_gpus=n_gpus_per_node,
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=i),
        ).remote(seconds)
        for i in range(nnodes)
    ]
    return ray.get(refs)
