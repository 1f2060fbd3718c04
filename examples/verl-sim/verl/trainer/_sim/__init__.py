"""Shared implementation of the verl stand-in's trainer entrypoints.

Modules (pure ones need no Ray and are unit-tested directly):

- :mod:`.config`      -- Hydra overrides -> config (checked against the real verl config).
- :mod:`.settings`    -- the run settings read from that config.
- :mod:`.inputs`      -- model/data checks with verl's (transformers'/datasets') messages,
                         row counts, step count derivation.
- :mod:`.checkpoints` -- verl's checkpoint layout and retention.
- :mod:`.resume`      -- where a run resumes from (``trainer.resume_mode``), as verl decides it.
- :mod:`.flavors`     -- what differs between PPO/GRPO and SFT.
- :mod:`.reward`      -- PPO/GRPO rewards: verl's custom reward loader, the default scorer, step rows.
- :mod:`.tracking`    -- W&B (``trainer.logger`` with ``wandb``) as verl's ``Tracking``.
- :mod:`.cluster`     -- everything that talks to Ray (GPU pre-check, placement group, steps).
- :mod:`.runner`      -- the flow shared by both entrypoints.
"""
