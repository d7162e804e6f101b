"""RL Baselines3 Zoo hyperparameters for SB3 algorithms on recsim's registered ids.

The YAML files beside this module are the source (one per algorithm, one entry per id, in the
zoo's own format); ``recsim_gym.agents.zoo.ppo`` and ``.a2c`` expose them as the
``hyperparams`` dict that the zoo's ``--conf-file <python package>`` reads::

    python -m rl_zoo3.train --algo ppo --env recsim/default-v0 \\
        --gym-packages recsim_gym.env --conf-file recsim_gym.agents.zoo.ppo
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ALGOS = ("ppo", "a2c")


def load(algo: str) -> dict[str, dict[str, Any]]:
    """The hyperparameters of ``algo`` (``'ppo'`` or ``'a2c'``) per registered env id."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    return yaml.safe_load((Path(__file__).with_name(f"{algo}.yml")).read_text())
