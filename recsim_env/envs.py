"""Gymnasium shells over the batched core: a single-user ``Env`` and a native ``VectorEnv``."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recsim_gym.env import core, render
from recsim_gym.env.params import Params
from recsim_gym.env.rng import check_seed, seed_to_key
from recsim_gym.env.simulator import make_simulator
from recsim_gym.env.spaces import Slate, validate_slates


def _autoreset_mode(mode: Any) -> AutoresetMode:
    """``mode`` as an ``AutoresetMode`` (its value, e.g. ``"SameStep"``, or its name, e.g.
    ``"same_step"``, in any case), or ``ValueError`` listing the valid ones."""
    if isinstance(mode, AutoresetMode):
        return mode
    if isinstance(mode, str):
        for member in AutoresetMode:
            if mode.lower() in (member.value.lower(), member.name.lower()):
                return member
    valid = ", ".join(f"{m.value!r} / {m.name.lower()!r}" for m in AutoresetMode)
    raise ValueError(f"autoreset_mode must be one of {valid} (or gymnasium.vector.AutoresetMode), "
                     f"got {mode!r}")


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().entropy % (2**63))


class RecSimEnv(gym.Env):
    """
    ## Description
    One simulated user of a recommender system. Each step the agent shows a slate of
    `slate_size` items chosen from `num_candidates` retrieved candidates; the user clicks one
    item or none (choice model), may convert after a click, and their interests, topic
    fatigue and satisfaction evolve. Unsatisfied users leave. See `recsim_gym.env.core` for the
    dynamics and `recsim_gym.env.params.Params` for every constant.

    ## Action Space
    `Slate(num_candidates, slate_size)`: a `MultiDiscrete` of `slate_size` candidate positions,
    in display order (position 0 first), whose samples are distinct. A slate that repeats a
    candidate (as SB3's independent `MultiDiscrete` heads often sample) has each repeat
    replaced by the lowest-index unused candidate, counted in `info["filled"]`; make the env
    with `duplicate_rule="raise"` to get `InvalidActionError` instead.

    ## Observation Space
    `Dict` of float32 `Box`es (T = `num_topics`, m = `num_candidates`, H = `history_length`):

    | key | shape | content |
    |-----|-------|---------|
    | `candidates` | (m, T+3) | topic vector, appeal, price feature, observed popularity |
    | `history` | (H, T+6) | last H interactions, oldest first: item features, click, conversion, valid |
    | `user` | (T+1,) | declared favourite topics (multi-hot), episode progress t/max_steps |
    | `interest`* | (T,) | latent interest in [-1, 1] |
    | `fatigue`* | (T,) | latent topic fatigue in [0, 1] |
    | `satisfaction`* | (1,) | latent satisfaction in [0, 1] |
    | `candidate_quality`* | (m,) | hidden item quality in [0, 1] |

    \\* only with `observe_latent=True` (oracles, debugging).

    ## Rewards
    `click_weight * click + conversion_weight * conversion` (times the price in `revenue`
    mode); always in `[0, params.max_reward]`.

    ## Starting State
    Interest: a few favourite topics in [0.5, 1], the rest in [-0.4, 0.4]; no fatigue;
    satisfaction `initial_satisfaction` +- 0.1; empty history.

    ## Episode End
    *Termination*: the user churns (probability rising as satisfaction falls).
    *Truncation*: `max_steps` steps. `info["end_reason"]` says which ("churned", "max_steps").

    ## Info
    `click`, `conversion` (bool), `revenue` (float), `position` and `item` of the click (-1 if
    none), `choice_probs` (k+1 probabilities: each position, then no-click), `end_reason`,
    `filled` (repeated candidates replaced in this slate; 0 for a slate of distinct candidates).

    ## Rendering
    `render_mode="ansi"`: `render()` returns text (the step, the user's satisfaction and top
    interests, the slate shown and what the user did). `render_mode="rgb_array"`: a 160 x 320
    picture (slate tiles coloured by topic, height = quality, the click framed; interest per
    topic; satisfaction gauge), which `gymnasium.wrappers.RecordVideo` records.

    ## Time limit
    The env truncates at `max_steps` itself; `env.spec.max_episode_steps` reports it (with any
    `max_steps=` override), and `gym.make` adds no `TimeLimit` of its own.

    ## Arguments
    ```python
    import gymnasium as gym
    import recsim_gym.env
    env = gym.make("recsim/default-v0", num_candidates=30)      # any Params field as keyword
    env = gym.make("recsim/RecSim-v0", preset="news")             # preset by argument
    ```

    ## Vectorized environment
    `gym.make_vec("recsim/default-v0", num_envs=1024)` builds :class:`RecSimVectorEnv`, the same
    core stepping all users at once. Its slot `b` reset with seed `s` equals this env reset
    with seed `s + b`.

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, preset: str = "default", params: Params | None = None,
                 render_mode: str | None = None, **overrides: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, "
                             f"got {render_mode!r}")
        self.render_mode = render_mode
        self.sim = make_simulator(preset, params, **overrides)
        self.params = self.sim.params
        self.observation_space = self.sim.observation_space()
        self.action_space = Slate(self.params.num_candidates, self.params.slate_size)
        self._state: core.State | None = None
        self._done = False
        self._user_seed: int | None = None
        self._episode = 0
        self._spec: EnvSpec | None = None
        self._shown: tuple[Any, np.ndarray, dict[str, Any], float] | None = None
        # (spent state, previous result): the next step writes into them instead of allocating
        self._spare: tuple[Any, Any] | None = None

    @property
    def spec(self) -> EnvSpec | None:
        """The registered spec, with ``max_episode_steps`` = this env's ``max_steps``."""
        return self._spec

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        if value is not None and value.max_episode_steps != self.params.max_steps:
            value = dataclasses.replace(value, max_episode_steps=self.params.max_steps)
        self._spec = value

    def _obs(self) -> dict[str, np.ndarray]:
        return {key: value[0] for key, value in self.sim.observe(self._state).items()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a new user. ``seed`` fixes the user's whole random stream (see rng)."""
        if seed is not None:
            seed = check_seed(seed, "reset(seed=...)")
        super().reset(seed=seed)
        if seed is not None:
            self._user_seed, self._episode = seed, 0
        elif self._user_seed is None:
            self._user_seed, self._episode = _fresh_seed(), 0
        else:
            self._episode += 1
        self._state = self.sim.reset(seed_to_key(self._user_seed, self._episode).reshape(1))
        self._done = False
        self._shown = None
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Show ``action`` (a slate) to the user."""
        if self._state is None:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        if self._done:
            raise RuntimeError("step() called after the episode ended (terminated or truncated); "
                               "call env.reset() to start a new user")
        slate, filled = validate_slates(action, self.params, None, return_filled=True)
        before = self._state
        # without renders nothing keeps the old state: it becomes the next step's buffers
        self._state, result = self.sim.step(self._state, slate, self._spare)
        terminated, truncated = bool(result.terminated[0]), bool(result.truncated[0])
        self._done = terminated or truncated
        info = {
            "click": bool(result.click[0]), "conversion": bool(result.conversion[0]),
            "revenue": float(result.revenue[0]), "position": int(result.position[0]),
            "item": int(result.item[0]), "choice_probs": result.choice_probs[0].copy(),
            "end_reason": self.sim.end_reasons[result.end_reason[0]], "filled": int(filled[0]),
        }
        reward = float(result.reward[0])
        if self.render_mode is not None:
            self._shown = (before, slate[0], info, reward)
        else:
            self._spare = (before, result)
        return self._obs(), reward, terminated, truncated, info

    def render(self) -> str | np.ndarray | None:
        """The ``render_mode`` render of the user and the last slate (None without a mode)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the env with "
                            "render_mode='ansi' or 'rgb_array'")
            return None
        if self._state is None:
            raise RuntimeError("render() called before reset(); call env.reset() first")
        view = self.sim.user_view(self._state, 0)
        slate = info = None
        reward = 0.0
        if self._shown is not None:  # the slate indexes the candidates of the state it was shown in
            before, slate, info, reward = self._shown
            shown = self.sim.user_view(before, 0)
            view = dataclasses.replace(view, candidate_topic=shown.candidate_topic,
                                       candidate_quality=shown.candidate_quality,
                                       candidate_item=shown.candidate_item)
        if self.render_mode == "ansi":
            return render.ansi(view, slate, info, reward)
        return render.rgb(view, slate, info)

    @property
    def state(self) -> core.State | None:
        """The current (latent) state, batch size 1; for debugging and oracles. The env reuses
        its state objects: this one is overwritten two steps later (copy what you keep)."""
        return self._state


class RecSimVectorEnv(VectorEnv):
    """B simulated users stepped together by one batched core (not copies of the single env).

    Observations, rewards, terminations and truncations have a leading batch axis; ``info``
    holds the per-user arrays of :class:`RecSimEnv`'s info (``end_reason`` as int8 codes into
    ``recsim_gym.env.core.END_REASONS``), each with Gymnasium's ``_key`` mask.

    Seeds: ``reset(seed=s)`` seeds slot ``b`` with ``s + b`` (Gymnasium's convention); a list
    seeds slots one by one. Slot ``b``'s e-th episode after that equals the e-th episode of a
    :class:`RecSimEnv` reset with seed ``s + b`` and then reset without a seed e times.

    Autoreset: ``autoreset_mode`` is ``AutoresetMode.NEXT_STEP`` (default: the step after an
    episode ends resets that slot, ignoring its action, with reward 0), ``SAME_STEP`` (the slot
    resets at once; the last observation is in ``info["final_obs"]`` rows where
    ``info["_final_obs"]``) or ``DISABLED`` (use ``reset(options={"reset_mask": mask})``).

    Observations, rewards and info arrays are new arrays every step: keeping or modifying them
    is safe. With ``reuse_buffers=True`` every step writes into the same arrays instead (no
    allocation: at large B that saves the page faults of fresh memory every step); the next
    step then overwrites what the previous one returned, so copy what you keep.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, preset: str = "default", params: Params | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 render_mode: str | None = None, reuse_buffers: bool = False, **overrides: Any):
        if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if not isinstance(reuse_buffers, bool | np.bool_):
            raise ValueError(f"reuse_buffers must be True or False, got {reuse_buffers!r}")
        num_envs = int(num_envs)
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r}: the vector env does not render; render "
                             "one user with gym.make(id, render_mode='ansi' or 'rgb_array')")
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.sim = make_simulator(preset, params, **overrides)
        self.params = self.sim.params
        self.num_envs = num_envs
        self.single_observation_space = self.sim.observation_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.single_action_space = Slate(self.params.num_candidates, self.params.slate_size)
        self.action_space = Slate(self.params.num_candidates, self.params.slate_size, num_envs)
        self._state: core.State | None = None
        self._seeds = np.zeros(num_envs, dtype=np.uint64)
        self._episodes = np.zeros(num_envs, dtype=np.uint64)
        self._ended = np.zeros(num_envs, dtype=bool)
        self._all_true = np.ones(num_envs, dtype=bool)
        self._all_true.setflags(write=False)
        self.reuse_buffers = bool(reuse_buffers)
        self._spare_state: Any = None  # the spent state: the next step writes into it
        self._result: Any = None  # with reuse_buffers: the outcome arrays every step fills
        self._obs_buffers: dict[str, dict[str, np.ndarray]] = {}  # with reuse_buffers: "obs", "final"

    # ------------------------------------------------------------------------------------
    def _keys(self, index: np.ndarray | slice = slice(None)) -> np.ndarray:
        return seed_to_key(self._seeds[index], self._episodes[index])

    def _obs(self, which: str = "obs") -> dict[str, np.ndarray]:
        """The observation of the current state: new arrays, or with ``reuse_buffers`` the
        ``which`` buffers ("obs" for the step's, "final" for ``info["final_obs"]``)."""
        if not self.reuse_buffers:
            return self.sim.observe(self._state)
        self._obs_buffers[which] = self.sim.observe(self._state, self._obs_buffers.get(which))
        return self._obs_buffers[which]

    def _reset_slots(self, index: np.ndarray, seeds: np.ndarray | None = None) -> None:
        """Start the next episode in slots ``index`` (in place on the env's own state), or the
        first episode of ``seeds`` when given."""
        if seeds is None:
            self._episodes[index] += np.uint64(1)
        else:
            self._seeds[index], self._episodes[index] = seeds, 0
        self.sim.reset_into(self._state, index, self._keys(index))
        self._ended[index] = False

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every slot (or, with ``options={"reset_mask": mask}``, only the masked ones)."""
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != bool or mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask'] must be a bool array of shape "
                                 f"({self.num_envs},), got {mask.dtype} {mask.shape}")
        seeds = None
        if seed is not None:
            if isinstance(seed, Sequence | np.ndarray) and np.ndim(seed) > 0:
                given = list(np.asarray(seed, dtype=object).ravel())
                if len(given) != self.num_envs:
                    raise ValueError(f"reset(seed=...) got {len(given)} seeds for {self.num_envs} envs")
                seeds = np.array([check_seed(s, f"reset(seed=...)[{i}]") for i, s in enumerate(given)],
                                 dtype=np.uint64)
            else:
                first = check_seed(seed, "reset(seed=...)", count=self.num_envs)
                seeds = np.uint64(first) + np.arange(self.num_envs, dtype=np.uint64)
        if mask is not None and self._state is not None:
            self._reset_slots(np.flatnonzero(mask), None if seeds is None else seeds[mask])
            return self._obs(), {}
        if seeds is not None:
            self._seeds[:] = seeds
            self._episodes[:] = 0
        elif self._state is None:
            self._seeds[:] = (_fresh_seed() + np.arange(self.num_envs, dtype=np.uint64)) % np.uint64(2**63)
        else:
            self._episodes += np.uint64(1)
        self._state = self.sim.reset(self._keys())
        self._spare_state = None
        self._ended[:] = False
        return self._obs(), {}

    def step(self, actions: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray,
                                          np.ndarray, dict[str, Any]]:
        """Show one slate per user; see the class docstring for autoreset."""
        if self._state is None:
            raise RuntimeError("step() called before reset(); call envs.reset() first")
        if self.autoreset_mode == AutoresetMode.DISABLED and self._ended.any():
            raise RuntimeError(
                f"step() called on ended episode(s) in slots {np.flatnonzero(self._ended)[:10]}"
                " with autoreset disabled; reset them with reset(options={'reset_mask': mask})")
        slates, filled = validate_slates(actions, self.params, self.num_envs, return_filled=True)
        restarting = np.flatnonzero(self._ended) if (
            self.autoreset_mode == AutoresetMode.NEXT_STEP) else np.empty(0, dtype=np.int64)
        spent = self._state
        self._state, result = self.sim.step(self._state, slates, (self._spare_state, self._result))
        self._spare_state = spent  # the env's own: nothing else holds it
        if self.reuse_buffers:
            self._result = result
        reward, terminated, truncated = result.reward, result.terminated, result.truncated
        info = self._info(result, restarting, filled)
        if restarting.size:
            self._reset_slots(restarting)
            for array in (reward, terminated, truncated, info["end_reason"], info["click"],
                          info["conversion"], info["revenue"], info["choice_probs"], info["filled"]):
                array[restarting] = 0
            info["position"][restarting] = -1
            info["item"][restarting] = -1
        ended = terminated | truncated
        self._ended = ended
        if self.autoreset_mode == AutoresetMode.SAME_STEP and ended.any():
            index = np.flatnonzero(ended)
            info["final_obs"] = self._obs("final")
            info["_final_obs"] = ended.copy()
            self._reset_slots(index)
        return self._obs(), reward, terminated, truncated, info

    def _info(self, result: core.StepResult, restarting: np.ndarray, filled: np.ndarray
              ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "click": result.click, "conversion": result.conversion, "revenue": result.revenue,
            "position": result.position, "item": result.item, "choice_probs": result.choice_probs,
            "end_reason": result.end_reason, "filled": filled,
        }
        present = self._all_true
        if restarting.size:  # slots that only restarted this step carry no step info
            present = self._all_true.copy()
            present[restarting] = False
        for key in list(info):
            info["_" + key] = present
        return info

    @property
    def state(self) -> core.State | None:
        """The current batched (latent) state; for debugging and oracles. The env reuses its
        state objects: this one is overwritten two steps later (copy what you keep)."""
        return self._state
