"""SFT entrypoint of the verl stand-in.

    python3 -m verl.trainer.sft_trainer_ray <hydra overrides...>

Overrides are checked against verl's ``sft_trainer_engine`` config.
See :mod:`verl.trainer._sim.runner`.
"""

import sys


def main() -> None:
    from verl.trainer._sim.runner import run

    run("sft", sys.argv[1:])


if __name__ == "__main__":
    main()
