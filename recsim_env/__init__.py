"""recsim_env: a batched reinforcement-learning recommendation simulator.

Importing the package registers the Gymnasium ids ``recsim/RecSim-v0`` (preset as argument)
and ``recsim/<preset>-v0`` for every preset, each with a native vector entry point::

    import gymnasium as gym, recsim_env
    env = gym.make("recsim/default-v0")
    envs = gym.make_vec("recsim/default-v0", num_envs=1024)
"""

from recsim_env import interest_evolution  # noqa: F401  (registers the preset)
from recsim_env.core import END_REASONS, State, StepResult
from recsim_env.envs import RecSimEnv, RecSimVectorEnv
from recsim_env.params import Params, field_table
from recsim_env.presets import PRESETS, make_params, preset_names
from recsim_env.registration import env_ids, register_envs
from recsim_env.simulator import Simulator
from recsim_env.spaces import InvalidActionError, Slate, validate_slates

__version__ = "0.1.0"

register_envs()

__all__ = [
    "END_REASONS", "InvalidActionError", "PRESETS", "Params", "RecSimEnv", "RecSimVectorEnv",
    "Simulator", "Slate", "State", "StepResult", "env_ids", "field_table", "make_params",
    "preset_names", "register_envs", "validate_slates", "__version__",
]
