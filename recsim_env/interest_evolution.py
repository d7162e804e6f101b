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
from scipy.special import ndtri

from recsim_gym.env import rng
from recsim_gym.env.fields import Config, option
from recsim_gym.env.fields import field_table as config_field_table
from recsim_gym.env.render import UserView
from recsim_gym.env.world import StepResult, UserBatch, WorldModel, register_world

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

_HALF_ULP24 = np.float32(2.0**-25)  # shifts 24-bit uniforms from [0, 1) into (0, 1)
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
    no_clicks: np.ndarray  #: (B,) int64 steps without a click so far
    cand_topic: np.ndarray  #: (B, m) int64 candidates' topics
    cand_quality: np.ndarray  #: (B, m) float64 candidates' qualities
    history: np.ndarray  #: (B, H, T+3) float32 last H steps, oldest first
    response: np.ndarray  #: (B, k, T+4) float32 last step's response per slate position


def _normals(u: np.ndarray) -> np.ndarray:
    """Standard normals from 24-bit uniforms in [0, 1) (inverse CDF, |z| <= 5.9)."""
    return ndtri(u + _HALF_ULP24).astype(np.float64)


class InterestEvolutionWorld(WorldModel):
    """Batched RecSim interest-evolution dynamics (see the module docstring)."""

    def __init__(self, params: InterestEvolutionParams):  # no catalog: documents are per step
        self.params = params
        self._means = params.quality_means()
        self._eye = np.eye(params.num_topics, dtype=np.float32)

    end_reasons = END_REASONS

    # ------------------------------------------------------------------ documents
    def _documents(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates' topics and qualities (B, m) from uniforms (B, 2m)."""
        p, m = self.params, self.params.num_candidates
        topic = np.minimum((u[:, :m] * p.num_topics).astype(np.int64), p.num_topics - 1)
        quality = self._means[topic] + p.quality_std * _normals(u[:, m:])
        return topic, quality

    # ------------------------------------------------------------------ reset
    def reset(self, keys: np.ndarray) -> IEState:
        """New users for episode keys ``keys`` (B,) uint64."""
        p = self.params
        keys = np.asarray(keys, dtype=np.uint64)
        b, t, m = keys.shape[0], p.num_topics, p.num_candidates
        stream = rng.stream_start(keys)
        u = rng.uniforms(stream, t + 2 * m, rng.SALT_RESET)
        topic, quality = self._documents(u[:, t:])
        return IEState(
            key=keys.copy(), stream=stream, t=np.zeros(b, np.int64),
            interest=u[:, :t].astype(np.float64) * 2.0 - 1.0,
            budget=np.full(b, p.time_budget), watched=np.zeros(b), no_clicks=np.zeros(b, np.int64),
            cand_topic=topic, cand_quality=quality,
            history=np.zeros((b, p.history_length, t + len(HISTORY_FLAGS)), np.float32),
            response=np.zeros((b, p.slate_size, t + len(RESPONSE_FIELDS)), np.float32))

    # ------------------------------------------------------------------ choice
    def choice_probs(self, scores: np.ndarray) -> np.ndarray:
        """Click probability per slate position, then no-click (B, k+1), from the raw scores
        ``<interest, features>`` (B, k) of the slate, under ``params.choice_model``."""
        p = self.params
        b, k = scores.shape
        if p.choice_model == "proportional":
            mass = np.empty((b, k + 1))
            mass[:, :k] = scores - p.min_normalizer
            mass[:, k] = p.no_click_mass - p.min_normalizer
            return mass / mass.sum(axis=1, keepdims=True)
        if p.choice_model == "logit":
            logits = np.empty((b, k + 1))
            logits[:, :k] = scores
            logits[:, k] = p.no_click_mass
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        base = scores - p.min_normalizer if p.choice_model == "proportional_cascade" else np.exp(scores)
        click = p.attention_prob * p.score_scaling * base  # click prob of an examined position
        reach = np.cumprod(np.concatenate([np.ones((b, 1)), 1.0 - click], axis=1), axis=1)
        probs = np.empty((b, k + 1))
        probs[:, :k] = reach[:, :k] * click
        probs[:, k] = reach[:, k]
        return probs / probs.sum(axis=1, keepdims=True)  # RecSim's choose_item normalises too

    def _single_item_score(self, scores: np.ndarray) -> np.ndarray:
        """The choice model's score of an item scored alone (RecSim's ``expected_utility``)."""
        p = self.params
        if p.choice_model == "proportional":
            return scores - p.min_normalizer
        if p.choice_model == "logit":
            return 1.0 / (1.0 + np.exp(p.no_click_mass - scores))
        base = scores - p.min_normalizer if p.choice_model == "proportional_cascade" else np.exp(scores)
        return p.attention_prob * p.score_scaling * base

    # ------------------------------------------------------------------ step
    def step(self, state: IEState, slates: np.ndarray) -> tuple[IEState, StepResult]:
        """One step for every user (``slates`` (B, k) already validated)."""
        p = self.params
        b, k, m = state.batch_size, p.slate_size, p.num_candidates
        rows = np.arange(b)
        col = rows[:, None]
        u = rng.uniforms(state.stream, 2 + 2 * m, rng.SALT_STEP)

        shown_topic = state.cand_topic[col, slates]  # (B, k)
        shown_quality = state.cand_quality[col, slates]
        scores = state.interest[col, shown_topic]  # <interest, one-hot features>
        probs = self.choice_probs(scores)
        cdf = np.cumsum(probs, axis=1)
        choice = np.minimum((u[:, :1] >= cdf[:, :k]).sum(axis=1), k)  # k = no click
        click = choice < k
        pos = np.minimum(choice, k - 1)
        topic = shown_topic[rows, pos]
        quality = shown_quality[rows, pos]
        theta = scores[rows, pos]

        # Watch time and budget (IEvUserModel._generate_click_response / update_state).
        watch = np.where(click, np.minimum(np.maximum(state.budget, 0.0), p.video_length), 0.0)
        utility = p.user_quality_factor * self._single_item_score(theta) + (
            p.document_quality_factor * quality)
        budget = np.where(click, state.budget - watch + p.user_update_alpha * watch * utility,
                          state.budget - p.step_penalty)

        # Interest of the clicked topic moves toward (or away from) the document.
        step_size = p.interest_step_max - (p.interest_step_max / p.interest_step_zero) * np.abs(theta)
        update = step_size * (1.0 - theta)
        toward = u[:, 1] < (theta + 1.0) / 2.0
        new_theta = np.minimum(np.maximum(np.where(toward, theta + update, theta - update), -1.0), 1.0)
        interest = state.interest.copy()
        clicked_rows = np.flatnonzero(click)
        interest[clicked_rows, topic[clicked_rows]] = new_theta[clicked_rows]

        t = state.t + 1
        terminated = budget <= 0.0
        truncated = ~terminated & (t >= p.max_steps)
        end_reason = np.where(terminated, END_BUDGET, np.where(truncated, END_MAX_STEPS, END_NONE))

        # Observation records: history entry (clicked item, else the first shown) and response.
        tn = p.num_topics
        entry = np.empty((b, tn + len(HISTORY_FLAGS)), np.float32)
        entry[:, :tn] = self._eye[np.where(click, topic, shown_topic[:, 0])]
        entry[:, tn] = click
        entry[:, tn + 1] = watch / p.video_length
        entry[:, tn + 2] = 1.0
        history = np.concatenate([state.history[:, 1:], entry[:, None]], axis=1)
        response = np.empty_like(state.response)
        response[:, :, :tn] = self._eye[shown_topic]
        response[:, :, tn] = 0.0
        response[rows, pos, tn] = click
        response[:, :, tn + 1] = 0.0
        response[rows, pos, tn + 1] = watch
        response[:, :, tn + 2] = np.minimum(np.maximum(shown_quality, -QUALITY_BOUND), QUALITY_BOUND)
        response[:, :, tn + 3] = 1.0

        cand_topic, cand_quality = self._documents(u[:, 2:])  # RecSim resamples every step
        new_state = IEState(
            key=state.key, stream=state.stream + rng.WEYL32, t=t, interest=interest, budget=budget,
            watched=state.watched + watch, no_clicks=state.no_clicks + ~click,
            cand_topic=cand_topic, cand_quality=cand_quality, history=history, response=response)
        result = StepResult(
            reward=watch.astype(np.float32), click=click, conversion=np.zeros(b, bool),
            revenue=np.zeros(b, np.float32), position=np.where(click, choice, -1).astype(np.int64),
            item=np.where(click, slates[rows, pos], -1).astype(np.int64),
            choice_probs=probs.astype(np.float32), terminated=terminated, truncated=truncated,
            end_reason=end_reason.astype(np.int8))
        return new_state, result

    def user_view(self, state: IEState, index: int) -> UserView:
        """User ``index`` for the renders: interest, remaining time budget, the documents."""
        p = self.params
        return UserView(t=int(state.t[index]), max_steps=p.max_steps, interest=state.interest[index],
                        level_name="time budget",
                        level=float(state.budget[index]) / max(p.time_budget, 1e-12),
                        candidate_topic=state.cand_topic[index],
                        candidate_quality=state.cand_quality[index],
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
            "user": ((2,), 0.0, float(user_high)),
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

    def observe(self, state: IEState) -> dict[str, np.ndarray]:
        """Batched observation dict (new arrays); keys in the README section on this preset.

        * ``candidates`` (m, T): topic one-hot of each candidate (RecSim's document observation).
        * ``history`` (H, T+3): last H steps, oldest first: topic of the clicked item (of the
          first shown item on a no-click step), click, watch time / video length, valid.
        * ``user`` (2,): minutes watched so far and ``step_penalty`` x no-click steps so far, both
          over the initial time budget (what a service can log; the budget itself is hidden).
        * ``exposure='recsim'``: ``interest`` (T,) (RecSim's user observation) and ``response``
          (k, T+4): per shown position of the last step, topic, click, watch time, quality, valid.
        * ``observe_latent``: ``interest``, ``time_budget`` (1,), ``candidate_quality`` (m,).
        """
        p = self.params
        user = np.empty((state.batch_size, 2), np.float32)
        user[:, 0] = state.watched / p.time_budget
        user[:, 1] = state.no_clicks * (p.step_penalty / p.time_budget)
        obs = {"candidates": self._eye[state.cand_topic], "history": state.history.copy(),
               "user": user}
        if p.exposure == "recsim" or p.observe_latent:
            obs["interest"] = state.interest.astype(np.float32)
        if p.exposure == "recsim":
            obs["response"] = state.response.copy()
        if p.observe_latent:
            obs["time_budget"] = state.budget[:, None].astype(np.float32)
            obs["candidate_quality"] = np.clip(state.cand_quality, -QUALITY_BOUND,
                                               QUALITY_BOUND).astype(np.float32)
        return obs


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
