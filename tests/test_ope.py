"""Off-policy evaluation: logged propensities are the logging policy's true probabilities, the
estimators are unbiased under their own assumptions (and biased outside them), and the harness
checks them against the simulator's truth on the same users."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from recsim_gym.agents.reference import RandomAgent
from recsim_gym.env.logging_policies import EpsilonSlateLogging, UniformLogging
from recsim_gym.env.logs import generate_logs
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.evaluate import evaluate
from recsim_gym.experiments.ope import LoggedTerms, one_step, pi_weights, sequential
from recsim_gym.experiments.ope_run import OPEConfig, lifetime_truth, run_ope


def _context(m: int, popularity: list[float] | None = None) -> dict[str, np.ndarray]:
    candidates = np.zeros((1, m, 5), np.float32)
    candidates[0, :, -1] = popularity if popularity is not None else np.linspace(0.1, 0.9, m)
    return {"candidates": candidates}


@pytest.mark.parametrize("policy", [UniformLogging(2), EpsilonSlateLogging(2, 0.4)], ids=lambda p: p.name)
def test_logged_propensities_are_the_policys_true_probabilities(policy) -> None:
    # sampled from the policy itself at one context: the frequencies of slates, of items at
    # positions and of prefixes match what the policy reports for the logged slates
    m, n = 4, 200_000
    obs = _context(m, [0.3, 0.9, 0.1, 0.5])
    gen = np.random.default_rng(0)
    many = {"candidates": np.repeat(obs["candidates"], n, axis=0)}
    slates, propensities = policy(many, gen)
    keys = slates[:, 0] * m + slates[:, 1]
    frequency = np.bincount(keys, minlength=m * m) / n
    reported = policy.slate_probability(many, slates)
    np.testing.assert_allclose(np.prod(propensities, axis=1), reported, rtol=1e-6)
    for key in np.unique(keys):
        assert reported[keys == key][0] == pytest.approx(frequency[key], abs=4e-3)
    marginals = policy.marginals(many, slates)
    for j in range(2):
        observed = np.bincount(slates[:, j], minlength=m) / n
        for c in range(m):
            assert marginals[slates[:, j] == c, j][0] == pytest.approx(observed[c], abs=4e-3)
    # every ordered slate has positive probability, and they sum to one
    every = np.array(list(itertools.permutations(range(m), 2)))
    probs = policy.slate_probability({"candidates": np.repeat(obs["candidates"], len(every), 0)}, every)
    assert probs.min() > 0 and probs.sum() == pytest.approx(1.0)


def test_generated_logs_store_the_policys_propensities() -> None:
    policy = EpsilonSlateLogging(5, 0.3)
    logs = generate_logs("default", n_steps=400, batch_size=100, policy=policy, seed=2)
    assert logs["propensity"].min() > 0
    greedy_rate = np.mean(np.all(logs["propensity"] > 0.5, axis=1))
    assert 0.6 < greedy_rate < 0.8  # 1 - epsilon of the slates are the popularity slate


# --- the estimators on synthetic slate bandits with a known truth ------------------------------------

M, K = 4, 2
SLATES = np.array(list(itertools.permutations(range(M), K)))


def _bandit(reward_of, n: int, gen: np.random.Generator, target, policy=None,
            model_error: float = 0.0) -> tuple[LoggedTerms, float]:
    """A log of n contexts (each its own user) with uniform (or ``policy``) logging; expected
    reward ``reward_of(context, slate)``; a deterministic target: slates (n, K), or a function
    of the contexts giving them."""
    policy = policy or UniformLogging(K)
    context = gen.normal(size=(n, M))
    if callable(target):
        target = target(context)
    obs = {"candidates": np.concatenate([np.zeros((n, M, 4)), context[..., None]], axis=2)}
    logged, _ = policy(obs, gen)
    expected = reward_of(context, logged)
    reward = (gen.random(n) < expected).astype(float)
    truth = float(reward_of(context, target).mean())
    p0_prefix = policy.prefix_probability(obs, logged)
    same = np.cumprod(logged == target, axis=1).astype(float)
    position_reward = np.zeros((n, K))
    position_reward[np.arange(n), gen.integers(0, K, n)] = reward  # a credit per position
    terms = LoggedTerms(
        user=np.arange(n), step=np.zeros(n, int), reward=reward, position_reward=position_reward,
        slate_weight=same[:, -1] / p0_prefix[:, -1],
        marginal_weight=(logged == target) / policy.marginals(obs, logged),
        prefix_weight=same / p0_prefix,
        pi_weight=pi_weights(np.linalg.pinv(policy.gram(M)), policy.canonical_order(obs), logged, target),
        model_logged=reward_of(context, logged) + model_error,
        model_target=reward_of(context, target) + model_error)
    return terms, truth


def _nonlinear(context: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """An MNL-like click probability: items compete (not additive over positions)."""
    w = np.exp(np.take_along_axis(context, slates, axis=1)) * np.array([1.0, 0.6])
    return w.sum(1) / (1.0 + w.sum(1))


def _additive(context: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """A sum of (position, item) terms: the pseudo-inverse estimator's assumption."""
    item = 0.25 / (1.0 + np.exp(-np.take_along_axis(context, slates, axis=1)))
    return item[:, 0] + 0.6 * item[:, 1]


def _cascade(context: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """A click under the cascade model: the second position counts only if the first is skipped."""
    a = 1.0 / (1.0 + np.exp(-3.0 * np.take_along_axis(context, slates, axis=1)))
    return a[:, 0] + (1.0 - a[:, 0]) * a[:, 1]


def _best_two(context: np.ndarray) -> np.ndarray:
    """The two most attractive items of each context, best first."""
    return np.argsort(-context, axis=1)[:, :K]


def _estimates(reward_of, name: str, logs: int = 300, n: int = 400, target=None,
               **kwargs) -> tuple[np.ndarray, float]:
    gen = np.random.default_rng(11)
    values, truths = [], []
    for _ in range(logs):
        terms, truth = _bandit(reward_of, n, gen, np.tile([2, 0], (n, 1)) if target is None else target,
                               **kwargs)
        values.append(one_step(terms)[name].value)
        truths.append(truth)
    return np.array(values), float(np.mean(truths))


@pytest.mark.parametrize("name", ["IPS", "SNIPS"])
def test_ips_and_snips_are_unbiased_with_uniform_logging(name: str) -> None:
    values, truth = _estimates(_nonlinear, name)
    values = values[np.isfinite(values)]
    half = 2.6 * values.std(ddof=1) / np.sqrt(len(values))  # 99% interval of the mean over logs
    assert abs(values.mean() - truth) < half
    assert values.std() > 0.01  # a test of something: the estimates do vary


def test_dr_error_is_no_larger_than_ips_with_an_exact_model() -> None:
    gen = np.random.default_rng(5)
    ips, dr = [], []
    for _ in range(200):
        terms, truth = _bandit(_nonlinear, 400, gen, np.tile([1, 3], (400, 1)))
        estimates = one_step(terms)
        ips.append(estimates["IPS"].value - truth)
        dr.append(estimates["DR"].value - truth)
    # an exact model leaves DR only the reward's own noise, which IPS has on top of its weights'
    assert np.sqrt(np.mean(np.square(dr))) < 0.75 * np.sqrt(np.mean(np.square(ips)))


def test_pseudo_inverse_is_unbiased_for_an_additive_reward_and_biased_for_a_cascade() -> None:
    # target: the two most attractive items, where a cascade's clicks saturate (not additive)
    for policy in (UniformLogging(K), EpsilonSlateLogging(K, 0.5)):
        values, truth = _estimates(_additive, "PI", logs=200, n=1000, target=_best_two, policy=policy)
        assert abs(values.mean() - truth) < 2.6 * values.std(ddof=1) / np.sqrt(len(values))
    values, truth = _estimates(_cascade, "PI", logs=200, n=1000, target=_best_two)
    assert values.mean() - truth > 8 * values.std(ddof=1) / np.sqrt(len(values))  # overestimates


def test_per_decision_is_is_unbiased_over_trajectories() -> None:
    # two-step trajectories: the second step's weight multiplies the first's
    gen = np.random.default_rng(3)
    users, values = 3000, []
    policy = UniformLogging(K)
    truth = None
    for _ in range(60):
        rows = []
        for step in range(2):
            terms, step_truth = _bandit(_nonlinear, users, gen, np.tile([0, 1], (users, 1)))
            terms.step[:] = step
            rows.append(terms)
            truth = step_truth if truth is None else truth
        both = LoggedTerms(**{name: np.concatenate([getattr(rows[0], name), getattr(rows[1], name)])
                              for name in vars(rows[0])})
        values.append(sequential(both)["PDIS"].value)
    del policy
    values = np.array(values)
    expected = 2 * float(np.mean(_nonlinear(gen.normal(size=(400_000, M)), np.tile([0, 1], (400_000, 1)))))
    assert abs(values.mean() - expected) < 3 * values.std(ddof=1) / np.sqrt(len(values)) + 0.003


# --- the harness against the simulator ----------------------------------------------------------

def test_lifetime_truth_runs_the_target_on_the_same_users() -> None:
    params = make_simulator("default").params
    agent = RandomAgent(params, seed=0)
    first = 123_000
    truth = lifetime_truth(_FirstK(params), params, first, 40, horizon=5, gen=np.random.default_rng(0))
    same = evaluate(_FirstK(params), params, 40, seed=first).per_user["return"]
    np.testing.assert_allclose(truth["return"], same)
    assert (truth["return_h"] <= truth["return"]).all()
    del agent


class _FirstK:
    def __init__(self, params):
        self.k = params.slate_size

    def act(self, obs):
        return np.tile(np.arange(self.k), (len(obs["candidates"]), 1))


def test_a_small_run_reports_every_estimator_against_the_truth(tmp_path: Path) -> None:
    config = OPEConfig(env_overrides={"num_candidates": 6, "slate_size": 2}, targets=("random", "popularity"),
                       sizes=(300, 1200), reps=2, target_steps=500, model_rows=1000, cohort=128)
    report = run_ope(config, tmp_path, progress=False)
    text = report.read_text()
    assert "## Best estimator at 1,200 interactions" in text and "## Where each estimator fails" in text
    import json

    data = json.loads((tmp_path / "ope.json").read_text())
    errors = {(e["target"], e["reward"], e["size"], e["estimator"]): e for e in data["errors"]}
    # the random target equals uniform logging's value distribution: IPS is close to its truth
    random_ips = errors[("random", "click", 1200, "IPS")]
    assert random_ips["reps"] == 2 and random_ips["relative_rmse"] < 0.15
    assert ("popularity", "return", 1200, "PDIS") in errors
    for reward in ("click", "conversion", "return", "return_h"):
        assert (tmp_path / f"ope_{reward}.png").stat().st_size > 1000


def test_a_saved_log_with_its_candidates_gives_every_estimate(tmp_path: Path) -> None:
    from recsim_gym.env.logs import LogFormatError, load_logs, save_logs
    from recsim_gym.experiments.ope_run import estimate_log

    logs = generate_logs("default", n_steps=1500, batch_size=150, policy="epsilon_slate", seed=4,
                         full_observations=True)
    path = save_logs(logs, tmp_path / "log.npz", logging_policy="epsilon_slate", epsilon=0.3)
    loaded, meta = load_logs(path)
    result = estimate_log(loaded, None, meta)  # the uniformly random target
    assert set(result["click"]) == {"IPS", "SNIPS", "DM", "DR", "IIPS", "RIPS", "PI"}
    assert "return" in result["missing"]  # generate_logs cuts its last users short
    # without the marginals or a known policy, IIPS and PI are missing, and say why
    bare = {key: value for key, value in loaded.items() if key != "marginal"}
    missing = estimate_log(bare, None, {})["missing"]
    assert "IIPS" in missing and "PI" in missing
    with pytest.raises(ValueError, match="no 'candidates' column"):
        estimate_log({key: value for key, value in bare.items() if key != "candidates"}, None, {})
    # a log whose slate features disagree with its candidates is refused
    broken = dict(loaded)
    broken["slate_features"] = broken["slate_features"].copy()
    broken["slate_features"][3, 0, 0] += 1
    with pytest.raises(LogFormatError, match="slate_features"):
        save_logs(broken, tmp_path / "broken.npz")
