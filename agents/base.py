"""The agent protocol: one small, batch-aware interface every recommender implements.

An agent sees observation dicts with a leading batch axis (one row per user) and returns one
slate per user::

    slates = agent.act(obs)                  # (B, k) int64, distinct candidate positions per row

Rows are users, and which users a batch holds may change between calls (the evaluation
harness drops users who have left), so an agent keeps no per-row state across calls: what it
knows about a user comes from the observation (``history``, ``user``).

Optional methods (the runner and evaluation harness call them when present):

* ``observe(transition)`` - online learners see every step's :class:`Transition` batch
  (including ``terminated``/``truncated``) while they act;
* ``learn(env, total_steps, callback=None)`` - train on a vector env for ``total_steps`` env
  steps (user-steps); call ``callback(agent, steps_done)`` every so often (returning ``False``
  from it stops training) so the runner can record learning curves;
* ``check_train_env(num_envs)`` - raise ``ValueError`` if ``learn`` cannot train on a vector env
  of ``num_envs`` users (``recsim run`` calls it when it reads the config, before any training);
* ``save(path)`` / ``load(path)`` - persist and restore (``load`` is a classmethod);
* ``predict(obs, state=None, episode_start=None, deterministic=False)`` - SB3's signature, so
  SB3 models and recsim agents share one evaluation path.

:class:`BaseAgent` provides defaults for all but ``act``. A custom agent is a class with
``act`` (see ``examples/custom_agent.py``), registered with :func:`recsim_gym.agents.registry.register`,
the entry-point group ``recsim.agents``, or named as ``package.module:ClassName``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

Observation = dict[str, np.ndarray]
#: ``callback(agent, steps_done) -> bool | None``; returning False stops training.
Callback = Callable[[Any, int], "bool | None"]


@dataclass(frozen=True)
class Transition:
    """One step of a batch of users (arrays with a leading batch axis)."""

    obs: Observation  #: observation the slates were chosen for
    slates: np.ndarray  #: (B, k) slates shown
    reward: np.ndarray  #: (B,) rewards
    next_obs: Observation  #: observation after the step (of the ended episode when done)
    terminated: np.ndarray  #: (B,) the user churned
    truncated: np.ndarray  #: (B,) the episode hit its step limit
    info: dict[str, np.ndarray]  #: the env's info arrays (click, position, item, ...)


@runtime_checkable
class Agent(Protocol):
    """What every agent must provide."""

    def act(self, obs: Observation) -> np.ndarray:
        """One slate (k distinct candidate positions, best first) per user: (B, k) int64."""
        ...


class BaseAgent:
    """Defaults for the optional parts of the protocol. Subclasses implement :meth:`act`."""

    #: The newest training diagnostics (losses, episode returns, ...) of ``learn``, name ->
    #: number; the experiment harness logs it (TensorBoard, W&B) whenever ``learn`` calls back.
    last_training_row: dict[str, float] | None = None

    def act(self, obs: Observation) -> np.ndarray:
        """One slate per user; subclasses must implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement act(obs)")

    def observe(self, transition: Transition) -> None:
        """Online learners update here; the default ignores feedback."""

    def check_train_env(self, num_envs: int) -> None:
        """Raise ``ValueError`` if ``learn`` cannot train on ``num_envs`` users; the default
        accepts any number."""

    def predict(self, obs: Observation, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """SB3-style ``(actions, state)``."""
        return self.act(obs), state

    def save(self, path: str | Path) -> None:
        """Write the agent to ``path`` in recsim's agent file format (JSON, numpy arrays and
        torch weights in one zip: :mod:`recsim_gym.agents.persistence`; never a pickle)."""
        from recsim_gym.agents.persistence import save_agent

        save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path) -> BaseAgent:
        """Restore an agent written by :meth:`save`, running no code from the file; a file of
        the wrong kind raises ``AgentFileError`` naming what it holds."""
        from recsim_gym.agents.persistence import load_agent

        return load_agent(cls, path)

    def rebuild_module(self, name: str) -> Any:
        """A fresh torch module for attribute ``name`` (its weights are loaded after); agents
        with torch modules among their attributes override this."""
        raise NotImplementedError(f"{type(self).__name__} cannot rebuild its torch module {name!r}")


REQUIRED_METHODS = ("act",)
OPTIONAL_METHODS = ("observe", "learn", "save", "load", "predict")


def check_agent(agent: Any, name: str = "") -> None:
    """Raise ``TypeError`` naming what is missing if ``agent`` does not fit the protocol:
    ``act`` must be a method taking the observation; optional methods, when present, must be
    callable."""
    label = name or type(agent).__name__
    for method in REQUIRED_METHODS:
        if not callable(getattr(agent, method, None)):
            raise TypeError(f"agent {label!r} does not fit the recsim agent protocol: it has no "
                            f"{method}(obs) method (required: {', '.join(REQUIRED_METHODS)}; "
                            f"optional: {', '.join(OPTIONAL_METHODS)})")
    try:
        inspect.signature(agent.act).bind({})
    except TypeError as err:
        raise TypeError(f"agent {label!r} does not fit the recsim agent protocol: act must take one "
                        f"argument, the observation dict (act(obs) -> slates): {err}") from None
    except ValueError:  # builtins without a signature
        pass
    for method in OPTIONAL_METHODS:
        if hasattr(agent, method) and not callable(getattr(agent, method)):
            raise TypeError(f"agent {label!r} does not fit the recsim agent protocol: its {method!r} "
                            "is not a method")
