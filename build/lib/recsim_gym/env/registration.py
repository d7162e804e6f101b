"""Gymnasium registration of every preset (single env + native vector entry point)."""

from __future__ import annotations

import gymnasium as gym

from recsim_gym.env.simulator import all_preset_names

_ENTRY = "recsim_gym.env.envs:RecSimEnv"
_VECTOR_ENTRY = "recsim_gym.env.envs:RecSimVectorEnv"


def env_ids() -> list[str]:
    """Registered ids: ``recsim/RecSim-v0`` and ``recsim/<preset>-v0`` for each preset."""
    return ["recsim/RecSim-v0"] + [f"recsim/{name}-v0" for name in all_preset_names()]


def register_envs() -> None:
    """Register (idempotently) every id of :func:`env_ids`."""
    for env_id in env_ids():
        if env_id in gym.registry:
            continue
        preset = env_id.split("/")[1][: -len("-v0")]
        kwargs = {} if preset == "RecSim" else {"preset": preset}
        gym.register(id=env_id, entry_point=_ENTRY, vector_entry_point=_VECTOR_ENTRY,
                     kwargs=kwargs, disable_env_checker=False)
