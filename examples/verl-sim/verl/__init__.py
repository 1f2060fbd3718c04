"""verl-sim: a CPU-only stand-in for the ``verl`` package.

This is NOT verl.  It exposes the same entrypoints
(``python -m verl.trainer.main_ppo`` and ``python -m verl.trainer.sft_trainer_ray``)
so that Argus can run its tests and demo on machines without GPUs.  It checks
the Hydra overrides against the real verl config (when installed), validates the
inputs, takes the GPUs from Ray, fakes the training steps and writes
checkpoints the way verl lays them out.  See ``examples/verl-sim/README.md``.
"""

__version__ = "0.9.1+sim"
