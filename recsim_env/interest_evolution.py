"""RecSim's interest-evolution environment, re-implemented on the batched core.

A faithful re-implementation (not an import) of ``recsim/environments/interest_evolution.py``
from google-research/recsim as its ``create_environment`` builds it: the
``UtilityModelVideoSampler`` documents, the ``UtilityModelUserSampler`` users, the
``IEvUserModel`` dynamics, the ``MultinomialProportionalChoiceModel`` choice and the
``clicked_watchtime_reward`` reward. Every default below is RecSim's (file and name in each
field's doc). Registered as preset ``interest_evolution`` (``recsim/interest_evolution-v0``).

Model, for every user at once:

* **Documents** (resampled every step, ``num_candidates`` per user): a topic ``c`` uniform over
  ``num_topics`` (features = one-hot of ``c``); quality ``~ Normal(mean_c, quality_std)`` where
  the first ``int(0.7 T)`` ("trashy") topics have means evenly spaced on ``[-3, 0]`` and the rest
  ("nutritious") on ``[0, 3]``; every video lasts ``video_length`` = 4 minutes.
* **Users**: interest ``theta ~ U[-1, 1]^T``, time budget 200 minutes.
* **Choice** (proportional, the one RecSim builds): item ``j`` on the slate scores
  ``s_j = theta[c_j] - min_normalizer``, no-click scores ``no_click_mass - min_normalizer``;
  ``P(j) = s_j / (sum s + s_none)``. Logit and cascade variants are available.
* **Click on ``j``**: the user watches ``w = min(budget, video_length)`` (the reward);
  ``budget += w (user_update_alpha * (user_quality_factor * utility_j
  + document_quality_factor * quality_j) - 1)``; the clicked topic's interest moves by
  ``(0.3 - 0.3 |theta_c|) (1 - theta_c)`` up with probability ``(theta_c + 1) / 2``, else down,
  then is clipped to [-1, 1].
* **No click**: ``budget -= step_penalty``.
* The episode ends (``terminated``) when ``budget <= 0``; ``max_steps`` (RecSim's runner
  default, 27 000) truncates, which practically never happens.

Randomness comes from each user's counter-based stream (:mod:`recsim_gym.env.rng`), so a vector
env of B users equals B single envs. The README section "The RecSim interest-evolution preset"
lists what is observed and every known difference from RecSim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recsim_gym.env import ie_kernel, rng
from recsim_gym.env.fields import Config, option
from recsim_gym.env.fields import field_table as config_field_table
from recsim_gym.env.render import UserView
from recsim_gym.env.world import (
    StepResult,
    UserBatch,
    WorldModel,
    empty_observation,
    empty_result,
    register_world,
)

#: ``StepResult.end_reason`` codes of this preset.
END_NONE, END_BUDGET, END_MAX_STEPS = 0, 1, 2
END_REASONS = ("", "time_budget_exhausted", "max_steps")

#: Columns appended to each history entry after the item's topic one-hot.
HISTORY_FLAGS = ("click", "watch_fraction", "valid")
#: Columns appended to each ``response`` row (``exposure="recsim"``) after the topic one-hot.
RESPONSE_FIELDS = ("click", "watch_time", "quality", "valid")
#: Bound of RecSim's ``IEvResponse`` quality space.
QUALITY_BOUND = 100.0

CHOICE_MODELS = ("proportional", "logit", "proportional_cascade", "exponential_cascade")

_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class InterestEvolutionParams(Config):
    """Every constant of RecSim's interest-evolution world (RecSim's defaults).

    ``InterestEvolutionParams(num_candidates=10, slate_size=2)``; validated on construction,
    bad values raise ``ValueError`` naming the field and the allowed range.
    """

    # --- slate and observation -----------------------------------------------------------
    num_candidates: int = option(10, "Candidates m per step (RecSim env_config['num_candidates']; "
                             "10 is the SlateQ comparison setting).", 1, 100_000, group="slate")
    slate_size: int = option(2, "Slate size k (RecSim env_config['slate_size']).", 1, 100_000,
                         group="slate")
    history_length: int = option(8, "History length H: the last H steps in the observation.", 1, 10_000,
                             group="slate")
    exposure: str = option("platform", "'platform': interest and qualities hidden (only what a "
                       "service logs); 'recsim': also RecSim's observation: the interest vector "
                       "(RecSim's user observation) and the last response per slate position "
                       "(click, watch time, quality).", choices=("platform", "recsim"),
                       group="slate")
    observe_latent: bool = option(False, "Expose the latent state (interest, time budget, candidate "
                              "quality). For oracles and debugging.", group="slate")
    duplicate_rule: str = option("fill", "What a slate with a repeated candidate does: 'fill' each "
                             "repeat with the lowest-index unused candidate (info['filled'] counts "
                             "them), or 'raise' InvalidActionError (strict: for agents that must "
                             "emit distinct slates).", choices=("raise", "fill"), group="slate")

    # --- documents (UtilityModelVideoSampler) ----------------------------------------------
    num_topics: int = option(20, "Topics (clusters) T; a document's features are the one-hot of its "
                         "topic (IEvVideo.NUM_FEATURES).", 1, 10_000, group="documents")
    trashy_fraction: float = option(0.7, "The first int(T * trashy_fraction) topics are 'trashy' "
                                "(quality means on [min_quality_mean, 0]), the rest "
                                "'nutritious' (on [0, max_quality_mean]).", 0.0, 1.0,
                                group="documents")
    min_quality_mean: float = option(-3.0, "Quality mean of the worst trashy topic (min_utility).",
                                 -100.0, 0.0, group="documents")
    max_quality_mean: float = option(3.0, "Quality mean of the best nutritious topic (max_utility).",
                                 0.0, 100.0, group="documents")
    quality_std: float = option(0.1, "Std of a document's quality around its topic mean (RecSim "
                            "names it quality_variance but uses it as the normal's scale).",
                            0.0, 10.0, group="documents")
    video_length: float = option(4.0, "Length of every video in minutes (fixed).", 0.0, 1e4,
                             low_open=True, group="documents")

    # --- users (UtilityModelUserSampler, IEvUserModel) ---------------------------------------
    time_budget: float = option(200.0, "Initial session time budget in minutes.", 0.0, 1e7,
                            low_open=True, group="user")
    step_penalty: float = option(0.5, "Budget lost on a step without a click.", 0.0, 1e7,
                             low_open=True, group="user")
    user_update_alpha: float = option(0.9 / 3.4, "Budget gain per watched minute per unit of received "
                                  "utility (RecSim: alpha 0.9 times utility_range 1 / 3.4).",
                                  0.0, 100.0, group="user")
    user_quality_factor: float = option(0.0, "Weight of the choice model's score of the clicked "
                                    "item in received utility.", -100.0, 100.0, group="user")
    document_quality_factor: float = option(1.0, "Weight of the clicked document's quality in "
                                        "received utility.", -100.0, 100.0, group="user")
    interest_step_max: float = option(0.3, "Interest step size at interest 0 (alpha_y_intercept); "
                                  "it falls linearly with |interest|.", 0.0, 1.0, group="user")
    interest_step_zero: float = option(1.0, "|interest| at which the step size reaches 0 "
                                   "(alpha_x_intercept).", 0.0, 100.0, low_open=True, group="user")

    # --- choice (as create_environment builds it) --------------------------------------------
    choice_model: str = option("proportional", "'proportional' (MultinomialProportionalChoiceModel, "
                           "what RecSim's create_environment uses), 'logit' "
                           "(MultinomialLogitChoiceModel), 'proportional_cascade', "
                           "'exponential_cascade'.", choices=CHOICE_MODELS, group="choice")
    no_click_mass: float = option(1.0, "Score of the no-click option (IEvUserModel no_click_mass).",
                              -100.0, 100.0, group="choice")
    min_normalizer: float = option(-1.0, "Subtracted from every score by the proportional models so "
                               "scores are >= 0 (needs <= -1: interest scores reach -1).",
                               -100.0, 100.0, group="choice")
    score_scaling: float = option(0.05, "Cascade models: click probability of an examined item = "
                              "score_scaling * score.", 0.0, 100.0, group="choice")
    attention_prob: float = option(0.65, "Cascade models: probability of examining the next position.",
                               0.0, 1.0, group="choice")

    # --- episode -----------------------------------------------------------------------------
    max_steps: int = option(27_000, "Episode step limit (truncated=True); RecSim's runner "
                        "max_steps_per_episode default. The budget ends episodes long before.",
                        1, 10_000_000, group="episode")

    def check(self) -> None:
        """Cross-field rules (each field's own range is checked by :class:`Config`)."""
        self.require(self.slate_size <= self.num_candidates, "slate_size",
               f"must be <= num_candidates ({self.num_candidates}), got {self.slate_size}")
        if self.choice_model in ("proportional", "proportional_cascade"):
            self.require(self.min_normalizer <= -1.0, "min_normalizer",
                   f"must be <= -1 with choice_model={self.choice_model!r} (scores reach -1), "
                   f"got {self.min_normalizer}")
        if self.choice_model == "proportional":
            self.require(self.no_click_mass > self.min_normalizer, "no_click_mass",
                   f"must be > min_normalizer ({self.min_normalizer}) with the proportional "
                   f"model, got {self.no_click_mass}")
        if self.choice_model.endswith("cascade"):
            top = 1.0 - self.min_normalizer if self.choice_model.startswith("proportional") else np.e
            self.require(self.score_scaling * top <= 1.0, "score_scaling",
                   f"must be <= {1.0 / top:.4g} so score_scaling * score is a probability with "
                   f"choice_model={self.choice_model!r}, got {self.score_scaling}")

    @property
    def max_reward(self) -> float:
        """Upper bound of the per-step reward (minutes watched; rewards are >= 0)."""
        return float(self.video_length)

    @property
    def num_trashy(self) -> int:
        """Number of trashy topics (RecSim: ``int(T * 0.7)``)."""
        return int(self.num_topics * self.trashy_fraction)

    def quality_means(self) -> np.ndarray:
        """Quality mean per topic (T,): trashy topics on [min, 0], nutritious on [0, max]."""
        trashy = np.linspace(self.min_quality_mean, 0.0, self.num_trashy)
        nutritious = np.linspace(0.0, self.max_quality_mean, self.num_topics - self.num_trashy)
        return np.concatenate((trashy, nutritious))


def field_table() -> list[dict[str, str]]:
    """One row per field (name, group, default, allowed, doc), for docs and listings."""
    return config_field_table(InterestEvolutionParams)


@dataclass(slots=True)
class IEState(UserBatch):
    """Latent and observable state of B users (leading batch axis). Treated as immutable by
    :meth:`InterestEvolutionWorld.step`."""

    key: np.ndarray  #: (B,) uint64 episode key
    stream: np.ndarray  #: (B,) uint32 random-stream counter
    t: np.ndarray  #: (B,) int64 steps taken
    interest: np.ndarray  #: (B, T) float64 in [-1, 1]
    budget: np.ndarray  #: (B,) float64 remaining time budget (minutes)
    watched: np.ndarray  #: (B,) float64 minutes watched so far
    topic_minutes: np.ndarray  #: (B, T) float64 minutes watched so far per topic
    no_clicks: np.ndarray  #: (B,) int64 steps without a click so far
    cand_topic: np.ndarray  #: (B, m) int64 candidates' topics (their qualities follow from the
    #: state: InterestEvolutionWorld.candidate_quality)
    history: np.ndarray  #: (B, H, T+3) float32 last H steps, oldest first
    response: np.ndarray  #: (B, k, T+4) float32 last step's response per slate position


class InterestEvolutionWorld(WorldModel):
    """Batched RecSim interest-evolution dynamics (see the module docstring); the arithmetic
    runs in the compiled :mod:`recsim_gym.env.ie_kernel`."""

    def __init__(self, params: InterestEvolutionParams):  # no catalog: documents are per step
        self.params = params
        self._means = params.quality_means()
        self._eye = np.eye(params.num_topics, dtype=np.float32)
        self._constants, self._flags = ie_kernel.constants(params)
        m, t = params.num_candidates, params.num_topics
        self._step_codes = rng.column_codes(2 + 2 * m, rng.SALT_STEP).astype(np.uint64)
        self._reset_codes = rng.column_codes(t + 2 * m, rng.SALT_RESET).astype(np.uint64)

    end_reasons = END_REASONS

    # ------------------------------------------------------------------ reset
    def reset(self, keys: np.ndarray) -> IEState:
        """New users for episode keys ``keys`` (B,) uint64."""
        keys = np.asarray(keys, dtype=np.uint64)
        state = self.empty_state(keys.shape[0])
        self.reset_into(state, np.arange(keys.shape[0]), keys)
        return state

    def empty_state(self, batch_size: int) -> IEState:
        """Uninitialised state arrays for ``batch_size`` users (``reset`` and ``step`` fill them)."""
        p, b = self.params, batch_size
        t, m, k = p.num_topics, p.num_candidates, p.slate_size
        return IEState(
            key=np.empty(b, np.uint64), stream=np.empty(b, np.uint32), t=np.empty(b, np.int64),
            interest=np.empty((b, t)), budget=np.empty(b), watched=np.empty(b),
            topic_minutes=np.empty((b, t)), no_clicks=np.empty(b, np.int64),
            cand_topic=np.empty((b, m), np.int64),
            history=np.empty((b, p.history_length, t + len(HISTORY_FLAGS)), np.float32),
            response=np.empty((b, k, t + len(RESPONSE_FIELDS)), np.float32))

    def reset_into(self, state: IEState, index: np.ndarray, keys: np.ndarray) -> None:
        """Start new episodes with ``keys`` for users ``index`` of ``state``, in place."""
        keys = np.asarray(keys, dtype=np.uint64)
        state.key[index] = keys
        ie_kernel.reset_kernel(
            np.asarray(index, dtype=np.int64), rng.stream_start(keys), self._reset_codes,
            self.params.time_budget, state.stream, state.t, state.interest, state.budget,
            state.watched, state.topic_minutes, state.no_clicks, state.cand_topic, state.history,
            state.response)

    def candidate_quality(self, state: IEState) -> np.ndarray:
        """The hidden qualities (B, m) of the documents each user of ``state`` holds. They are
        not stored: each is drawn from the state's random stream when read (a step reads only
        the shown ones), the same values every time."""
        out = np.empty(state.cand_topic.shape)
        ie_kernel.candidate_quality(state.stream, state.t, state.cand_topic, self._step_codes,
                                    self._reset_codes, self._means, self.params.quality_std, out)
        return out

    # ------------------------------------------------------------------ choice
    def choice_probs(self, scores: np.ndarray) -> np.ndarray:
        """Click probability per slate position, then no-click (B, k+1), from the raw scores
        ``<interest, features>`` (B, k) of the slate, under ``params.choice_model``."""
        return ie_kernel.batch_choice_probs(np.asarray(scores, dtype=np.float64),
                                            self._flags[ie_kernel.I_CHOICE], self._constants)

    # ------------------------------------------------------------------ step
    def step(self, state: IEState, slates: np.ndarray,
             out: tuple[IEState | None, StepResult | None] | None = None) -> tuple[IEState, StepResult]:
        """One step for every user (``slates`` (B, k) already validated); ``out`` as in
        :meth:`WorldModel.step` (arrays to overwrite instead of allocating)."""
        new_state, result = out if out is not None else (None, None)
        if new_state is None:
            new_state = self.empty_state(state.batch_size)
        if new_state is state:
            raise ValueError("step(out=...) must not be the state being stepped")
        new_state.key = state.key
        if result is None:
            result = empty_result(state.batch_size, self.params.slate_size)
        result.conversion[:] = False  # no conversions or revenue in RecSim's world
        result.revenue[:] = 0.0
        ie_kernel.step_kernel(
            self._step_codes, self._reset_codes, self._means, self.params.quality_std, state.stream,
            state.t, state.interest, state.budget, state.watched, state.topic_minutes,
            state.no_clicks, state.cand_topic, state.history, state.response, slates,
            self._constants, self._flags, new_state.stream, new_state.t, new_state.interest,
            new_state.budget, new_state.watched, new_state.topic_minutes, new_state.no_clicks,
            new_state.cand_topic, new_state.history, new_state.response, result.reward,
            result.click, result.position, result.item, result.choice_probs, result.terminated,
            result.truncated, result.end_reason)
        return new_state, result

    def user_view(self, state: IEState, index: int) -> UserView:
        """User ``index`` for the renders: interest, remaining time budget, the documents."""
        p = self.params
        return UserView(t=int(state.t[index]), max_steps=p.max_steps, interest=state.interest[index],
                        level_name="time budget",
                        level=float(state.budget[index]) / max(p.time_budget, 1e-12),
                        candidate_topic=state.cand_topic[index],
                        candidate_quality=self.candidate_quality(state.take(slice(index, index + 1)))[0],
                        candidate_item=np.arange(p.num_candidates))

    # ------------------------------------------------------------------ observation
    def observation_shapes(self) -> dict[str, tuple[tuple[int, ...], float, float]]:
        """Per-user ``{key: (shape, low, high)}`` of the observation dict."""
        p = self.params
        t, m, k, h = p.num_topics, p.num_candidates, p.slate_size, p.history_length
        user_high = p.max_steps * max(p.video_length, p.step_penalty) / p.time_budget
        shapes: dict[str, tuple[tuple[int, ...], float, float]] = {
            "candidates": ((m, t), 0.0, 1.0),
            "history": ((h, t + len(HISTORY_FLAGS)), 0.0, 1.0),
            "user": ((t + 2,), 0.0, float(user_high)),
        }
        if p.exposure == "recsim" or p.observe_latent:
            shapes["interest"] = ((t,), -1.0, 1.0)
        if p.exposure == "recsim":
            shapes["response"] = ((k, t + len(RESPONSE_FIELDS)), -QUALITY_BOUND,
                                  max(QUALITY_BOUND, p.video_length))
        if p.observe_latent:
            shapes["time_budget"] = ((1,), -_F32_MAX, _F32_MAX)
            shapes["candidate_quality"] = ((m,), -QUALITY_BOUND, QUALITY_BOUND)
        return shapes

    def observe(self, state: IEState, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Batched observation dict: new arrays, or written into ``out`` (a previous observation
        of the same batch size); keys in the README section on this preset.

        * ``candidates`` (m, T): topic one-hot of each candidate (RecSim's document observation).
        * ``history`` (H, T+3): last H steps, oldest first: topic of the clicked item (of the
          first shown item on a no-click step), click, watch time / video length, valid.
        * ``user`` (T+2,): minutes watched so far per topic, in all, and ``step_penalty`` x
          no-click steps so far, each over the initial time budget (what a service logs; the
          budget itself is hidden, and it moves with the quality of what was watched, which the
          per-topic minutes let an agent track: ``docs/interest_evolution.md``).
        * ``exposure='recsim'``: ``interest`` (T,) (RecSim's user observation) and ``response``
          (k, T+4): per shown position of the last step, topic, click, watch time, quality, valid.
        * ``observe_latent``: ``interest``, ``time_budget`` (1,), ``candidate_quality`` (m,).
        """
        p = self.params
        if out is None:
            out = empty_observation(self.observation_shapes(), state.batch_size)
        user = out["user"]
        np.divide(state.topic_minutes, p.time_budget, out=user[:, :-2], casting="unsafe")
        np.divide(state.watched, p.time_budget, out=user[:, -2], casting="unsafe")
        np.multiply(state.no_clicks, p.step_penalty / p.time_budget, out=user[:, -1], casting="unsafe")
        np.take(self._eye, state.cand_topic, axis=0, out=out["candidates"], mode="clip")  # no temp copy
        np.copyto(out["history"], state.history)
        if "interest" in out:
            np.copyto(out["interest"], state.interest, casting="same_kind")
        if p.exposure == "recsim":
            np.copyto(out["response"], state.response)
        if p.observe_latent:
            np.copyto(out["time_budget"][:, 0], state.budget, casting="same_kind")
            np.clip(self.candidate_quality(state), -QUALITY_BOUND, QUALITY_BOUND,
                    out=out["candidate_quality"], casting="same_kind")
        return out


def make_simulator(params: InterestEvolutionParams | None = None, **overrides: Any
                   ) -> InterestEvolutionWorld:
    """The world-model factory: ``params`` (default RecSim's) with keyword ``overrides``."""
    if params is None:
        params = InterestEvolutionParams()
    elif not isinstance(params, InterestEvolutionParams):
        raise ValueError(f"preset 'interest_evolution' takes InterestEvolutionParams, got "
                         f"{type(params).__name__}")
    return InterestEvolutionWorld(params.replace(**overrides) if overrides else params)


register_world(
    "interest_evolution",
    "Google RecSim's interest-evolution environment (SlateQ paper): trashy/nutritious topics, "
    "time budget, proportional choice, watch-time reward.", make_simulator)
