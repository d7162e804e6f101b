"""A stable-baselines3 ``VecEnv`` over the batched simulator core.

SB3 does not accept Gymnasium vector envs, and wrapping B copies of the single-user env in a
``DummyVecEnv`` would step users one by one in Python. :class:`RecSimVecEnv` is instead a thin
shell over :class:`recsim_gym.env.RecSimVectorEnv` in same-step autoreset mode, i.e. over ONE
batched core stepping all B users at once, adapted to SB3's conventions:

* ``step_wait`` returns ``(obs, rewards, dones, infos)`` with ``dones = terminated | truncated``;
  a slot that ended is reset in the same step (its returned observation is the new user's).
* ``infos[i]["terminal_observation"]`` holds that slot's last observation (a per-user dict) and
  ``infos[i]["TimeLimit.truncated"]`` is True when the episode hit ``max_steps`` rather than
  churning, so PPO bootstraps truncated episodes and not terminated ones.
* seeds set by ``seed(s)`` reach slot ``b`` as ``s + b`` at the next ``reset()`` (SB3's and
  the vector env's convention), so slot ``b`` replays ``RecSimEnv`` reset with ``s + b``.

Per-user info dicts are empty except for ended slots (no per-step Python objects per user);
the batched per-step arrays (click, conversion, item, ...) are in :attr:`RecSimVecEnv.last_info`
for callbacks that want them. Episode statistics come from SB3's ``VecMonitor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from recsim_gym.env.envs import RecSimVectorEnv
from recsim_gym.env.params import Params


class RecSimVecEnv(VecEnv):
    """SB3 ``VecEnv`` of ``num_envs`` simulated users on one batched core.

    :param num_envs: number of users stepped together (B)
    :param preset: world preset (``recsim_gym.env.presets``)
    :param params: explicit world params instead of a preset
    :param overrides: any ``Params`` field, e.g. ``num_candidates=30``
    """

    def __init__(self, num_envs: int, preset: str = "default", params: Params | None = None,
                 **overrides: Any):
        self.env = RecSimVectorEnv(num_envs, preset=preset, params=params,
                                   autoreset_mode=AutoresetMode.SAME_STEP, **overrides)
        self.params = self.env.params
        self.render_mode = None
        super().__init__(num_envs, self.env.single_observation_space, self.env.single_action_space)
        self._actions: np.ndarray | None = None
        #: Batched info arrays of the last step (see ``RecSimVectorEnv.step``); None before it.
        self.last_info: dict[str, Any] | None = None

    def reset(self) -> dict[str, np.ndarray]:
        """Reset every slot; seeds from :meth:`seed` apply to this reset only."""
        seeds: Sequence[int] | None = None
        if all(s is not None for s in self._seeds):
            seeds = [int(s) for s in self._seeds]
        obs, _ = self.env.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store the slates (B, k) for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step all users; ended slots are reset at once (see the module docstring)."""
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions = np.asarray(self._actions)
        if actions.dtype.kind == "f":  # SB3 buffers store actions as float32
            actions = actions.astype(np.int64)
        self._actions = None
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final = info["final_obs"]
            for i in np.flatnonzero(dones).tolist():
                infos[i]["terminal_observation"] = {key: value[i] for key, value in final.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        self.last_info = info
        return obs, rewards.astype(np.float32, copy=False), dones, infos

    def close(self) -> None:
        """Nothing to release (no subprocesses)."""
        self.env.close()

    # The B users share one core: attributes and methods are the vector env's, answered once per index.
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``attr_name`` of the underlying ``RecSimVectorEnv`` (the same for every slot)."""
        value = self.render_mode if attr_name == "render_mode" else getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` on the shared vector env (only for all slots at once)."""
        if len(list(self._get_indices(indices))) != self.num_envs:
            raise ValueError("RecSimVecEnv slots share one core: set_attr applies to all slots")
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` once on the shared vector env; its result is repeated per slot."""
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """No slot is wrapped in a Gymnasium wrapper."""
        return [False for _ in self._get_indices(indices)]


def make_vec_env(num_envs: int, preset: str = "default", seed: int | None = None, monitor: bool = True,
                 **overrides: Any) -> VecEnv:
    """A :class:`RecSimVecEnv`, wrapped in ``VecMonitor`` (episode return/length in ``info``)."""
    from stable_baselines3.common.vec_env import VecMonitor

    env: VecEnv = RecSimVecEnv(num_envs, preset=preset, **overrides)
    if seed is not None:
        env.seed(seed)
    return VecMonitor(env) if monitor else env
