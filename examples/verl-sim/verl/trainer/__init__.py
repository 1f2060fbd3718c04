"""Trainer entrypoints of the verl stand-in (``main_ppo``, ``sft_trainer_ray``).

The shared implementation lives in :mod:`verl.trainer._sim`.
"""
