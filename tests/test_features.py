"""User x candidate cross features (recsim_gym.agents.features): values by hand, shapes, equivariance."""

import numpy as np
import torch

from recsim_gym.agents.bandits import item_keys
from recsim_gym.agents.features import cross_feature_dim, cross_features, hashed_item_ids
from recsim_gym.env.simulator import make_simulator


def _obs(preset: str, users: int = 4, steps: int = 12) -> dict[str, torch.Tensor]:
    from recsim_gym.env import RecSimVectorEnv

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


def test_hashed_item_ids_are_a_function_of_the_item_with_few_collisions() -> None:
    params = make_simulator("default").params
    columns, buckets = params.num_topics + 2, 2**16
    obs = _obs("default", users=64, steps=30)
    ids = hashed_item_ids(obs["candidates"], columns, buckets).numpy().ravel()
    keys = item_keys(obs["candidates"].numpy(), params.num_topics).ravel()
    assert ids.min() >= 0 and ids.max() < buckets
    # the same item (same static features) always lands in the same bucket
    unique_keys, first = np.unique(keys, return_index=True)
    np.testing.assert_array_equal(ids, ids[first][np.searchsorted(unique_keys, keys)])
    # distinct items rarely share one: expected share about items / buckets
    items = unique_keys.size
    assert items > 1000
    assert np.unique(ids).size >= items * (1 - 2 * items / buckets)
    # the bits of a candidate's popularity (last column) do not enter the hash
    moved = obs["candidates"].clone()
    moved[..., columns:] += 1.0
    np.testing.assert_array_equal(hashed_item_ids(moved, columns, buckets).numpy().ravel(), ids)
