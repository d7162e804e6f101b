"""User x candidate cross features (agents.features): values by hand, shapes, equivariance."""

import numpy as np
import torch

from agents.features import cross_feature_dim, cross_features
from recsim_env.simulator import make_simulator


def _obs(preset: str, users: int = 4, steps: int = 12) -> dict[str, torch.Tensor]:
    from recsim_env import RecSimVectorEnv

    env = RecSimVectorEnv(users, preset=preset)
    obs, _ = env.reset(seed=5)
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample())
    return {key: torch.as_tensor(obs[key]) for key in ("candidates", "history", "user")}


def test_values_match_a_hand_computation() -> None:
    t = 3
    candidates = torch.tensor([[[1.0, 0, 0, 0.9], [0, 0.5, 0.5, 0.1]]])  # (1, 2, T+1)
    # history (1, 2, T+3): topic, click, engaged, valid; entry 0 clicked+converted, entry 1 skipped
    history = torch.tensor([[[1.0, 0, 0, 1, 1, 1], [0, 1.0, 0, 0, 0, 1]]])
    user = torch.tensor([[0.0, 1, 1, 0.5]])  # declared topics 1 and 2, progress
    out = cross_features(candidates, history, user, t)
    assert out.shape == (1, 2, cross_feature_dim(t, 4)) == (1, 2, 2 * t + 5)
    clicked = torch.tensor([0.5, 0, 0])  # one click on topic 0 over H = 2
    np.testing.assert_allclose(out[0, :, :t], (candidates[0, :, :t] * clicked).numpy())
    np.testing.assert_allclose(out[0, :, t:2 * t], (candidates[0, :, :t] * user[0, :t]).numpy())
    # dots: clicked, engaged, skipped, last-step click (entry 1 was not a click), declared
    np.testing.assert_allclose(out[0, 0, 2 * t:].numpy(), [0.5, 0.5, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[0, 1, 2 * t:].numpy(), [0.0, 0.0, 0.25, 0.0, 1.0])


def test_shapes_on_both_observation_layouts_and_candidate_equivariance() -> None:
    for preset in ("default", "interest_evolution"):
        params = make_simulator(preset).params
        obs = _obs(preset)
        out = cross_features(obs["candidates"], obs["history"], obs["user"], params.num_topics)
        m = obs["candidates"].shape[1]
        assert out.shape == (4, m, cross_feature_dim(params.num_topics, obs["user"].shape[1]))
        assert torch.isfinite(out).all() and out.abs().sum() > 0
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(1))
        permuted = cross_features(obs["candidates"][:, perm], obs["history"], obs["user"], params.num_topics)
        torch.testing.assert_close(permuted, out[:, perm])
