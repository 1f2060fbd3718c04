"""PPO/GRPO entrypoint of the verl stand-in.

    python3 -m verl.trainer.main_ppo <hydra overrides...>

Overrides are checked against verl's ``ppo_trainer`` config; ``algorithm.adv_estimator=gae``
(or ``critic.enable=True``) adds a critic.  See :mod:`verl.trainer._sim.runner`.
"""

import sys


def main() -> None:
    from verl.trainer._sim.runner import run

    run("ppo", sys.argv[1:])


if __name__ == "__main__":
    main()
