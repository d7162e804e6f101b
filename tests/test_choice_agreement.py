"""The env's choice probabilities equal the numpy choice models applied to the true utilities.

Oracles and model-based agents compute choice probabilities with ``recsim_gym.env.choice`` and
``recsim_gym.agents.reference.item_terms``; the compiled kernel must agree with them exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from recsim_gym.agents.reference import item_terms
from recsim_gym.env import RecSimVectorEnv
from recsim_gym.env.choice import choice_probabilities, sample_choice


@pytest.mark.parametrize("choice_model", ["mnl", "cascade"])
@pytest.mark.parametrize("preset", ["default", "news", "ecommerce"])
def test_info_choice_probs_match_numpy_model(preset: str, choice_model: str) -> None:
    env = RecSimVectorEnv(64, preset=preset, observe_latent=True, choice_model=choice_model)
    obs, _ = env.reset(seed=3)
    checked = 0
    for _ in range(30):
        slates = env.action_space.sample()
        utility = np.take_along_axis(item_terms(obs, env.params)["utility"], slates, axis=1)
        expected = choice_probabilities(utility.astype(np.float32), env.params)
        active = ~env._ended  # slots that really step (not autoresetting) this call
        obs, _, _, _, info = env.step(slates)
        np.testing.assert_allclose(info["choice_probs"][active], expected[active], rtol=2e-5,
                                   atol=2e-6)
        np.testing.assert_allclose(info["choice_probs"][active].sum(axis=1), 1.0, atol=1e-5)
        assert np.array_equal(info["_choice_probs"], active)
        checked += int(active.sum())
    assert checked > 1000


def test_sample_choice_inverse_cdf() -> None:
    probs = np.array([[0.2, 0.3, 0.5], [0.0, 0.0, 1.0]], dtype=np.float32)
    assert sample_choice(probs, np.array([0.1, 0.99])).tolist() == [0, 2]
    assert sample_choice(probs, np.array([0.45, 0.0])).tolist() == [1, 2]
