"""recsim_env: a batched reinforcement-learning recommendation simulator.

Importing the package registers the Gymnasium ids ``recsim/RecSim-v0`` (preset as argument)
and ``recsim/<preset>-v0`` for every preset, each with a native vector entry point::

    import gymnasium as gym
    import recsim_gym.env
    env = gym.make("recsim/default-v0")
    envs = gym.make_vec("recsim/default-v0", num_envs=1024)
"""

from importlib import metadata as _metadata

from recsim_gym.env import interest_evolution  # noqa: F401  (registers the preset)
from recsim_gym.env.core import State
from recsim_gym.env.envs import RecSimEnv, RecSimVectorEnv
from recsim_gym.env.params import Params, field_table
from recsim_gym.env.presets import PRESETS, make_params, preset_names
from recsim_gym.env.registration import env_ids, register_envs
from recsim_gym.env.simulator import DefaultWorld, make_simulator
from recsim_gym.env.spaces import InvalidActionError, Slate, random_slates, validate_slates
from recsim_gym.env.world import END_REASONS, StepResult, UserBatch, WorldModel, register_world

try:
    __version__ = _metadata.version("recsim-gym")
except _metadata.PackageNotFoundError:  # pragma: no cover  (imported without being installed)
    __version__ = "0+unknown"

register_envs()

__all__ = [
    "END_REASONS", "InvalidActionError", "PRESETS", "Params", "RecSimEnv", "RecSimVectorEnv",
    "DefaultWorld", "Slate", "State", "StepResult", "UserBatch", "WorldModel", "make_simulator",
    "random_slates", "register_world", "env_ids", "field_table", "make_params",
    "preset_names", "register_envs", "validate_slates", "__version__",
]
