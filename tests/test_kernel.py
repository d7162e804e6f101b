"""The compiled kernel against its documented contracts: RNG construction, purity, reset."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recsim_gym.env import rng
from recsim_gym.env.core import State
from recsim_gym.env.kernel import _uniform
from recsim_gym.env.simulator import make_simulator

STATE_FIELDS = tuple(f.name for f in dataclasses.fields(State))


def test_kernel_uniforms_equal_numpy_construction() -> None:
    streams = np.random.default_rng(0).integers(0, 2**32, size=50, dtype=np.uint32)
    codes = rng.column_codes(7, rng.SALT_STEP)
    expected = rng.uniforms(streams, 7, rng.SALT_STEP)
    got = np.array([[_uniform(np.uint64(s), np.uint64(c)) for c in codes] for s in streams])
    np.testing.assert_array_equal(got.astype(np.float32), expected)


def test_uniform_streams_look_uniform_and_independent() -> None:
    keys = rng.seed_to_key(np.arange(4000))
    u = rng.uniforms(rng.stream_start(keys), 64, rng.SALT_STEP).ravel()
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    expected = len(u) / 20
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 43.8  # 99.9% quantile of chi-square with 19 dof
    lag = np.corrcoef(u[:-1], u[1:])[0, 1]
    assert abs(lag) < 0.01


@pytest.mark.parametrize("preset", ["default", "news"])
def test_step_does_not_modify_its_input_state(preset: str) -> None:
    sim = make_simulator(preset, item_lifetime=7)
    state = sim.reset(rng.seed_to_key(np.arange(32)))
    before = {name: getattr(state, name).copy() for name in STATE_FIELDS}
    slates = np.tile(np.arange(sim.params.slate_size), (32, 1))
    for _ in range(5):
        sim.step(state, slates)
    for name in STATE_FIELDS:
        np.testing.assert_array_equal(getattr(state, name), before[name], err_msg=name)


def test_reset_into_equals_pure_reset() -> None:
    sim = make_simulator("default")
    state = sim.reset(rng.seed_to_key(np.arange(10)))
    slates = np.tile(np.arange(sim.params.slate_size), (10, 1))
    for _ in range(3):
        state, _ = sim.step(state, slates)
    index = np.array([2, 7])
    keys = rng.seed_to_key(np.array([100, 200]), 3)
    sim.reset_into(state, index, keys)
    fresh = sim.reset(keys)
    for name in STATE_FIELDS:
        np.testing.assert_array_equal(getattr(state, name)[index], getattr(fresh, name), err_msg=name)
    assert (state.t[[0, 1, 3]] == 3).all()


@pytest.mark.parametrize("preset", ["default", "news", "interest_evolution"])
def test_step_into_spent_buffers_equals_a_fresh_step(preset: str) -> None:
    # the shells step into a spent state and the previous result (out=...): same arrays as a
    # step that allocates, whatever the buffers held before
    sim = make_simulator(preset)
    users = 16
    state = sim.reset(rng.seed_to_key(np.arange(users)))
    gen = np.random.default_rng(0)
    spare = None
    for _ in range(12):
        slates = np.argsort(gen.random((users, sim.params.num_candidates)), axis=1)[:, :sim.params.slate_size]
        fresh_state, fresh_result = sim.step(state, slates)
        into_state, into_result = sim.step(state, slates, spare)
        for a, b in ((fresh_state, into_state), (fresh_result, into_result)):
            for field in dataclasses.fields(a):
                np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name),
                                              err_msg=field.name)
        np.testing.assert_equal(sim.observe(into_state), sim.observe(fresh_state, sim.observe(state)))
        spare = (state, into_result)
        state = into_state
    with pytest.raises(ValueError, match="must not be the state"):
        sim.step(state, slates, (state, None))


def test_ndtri_is_scipys_on_every_quality_draw() -> None:
    # the interest-evolution kernel's normal quantile equals scipy.special.ndtri (cephes) on all
    # 2^24 midpoints it is evaluated at, and on the float32 points of the RecSim-era draws
    from numba import njit
    from scipy.special import ndtri as scipy_ndtri

    from recsim_gym.env.ie_kernel import ndtri

    @njit
    def quantiles(y):
        out = np.empty_like(y)
        for i in range(y.shape[0]):
            out[i] = ndtri(y[i])
        return out

    j = np.arange(2**24, dtype=np.float64)
    midpoints = (j + 0.5) * 2.0**-24
    np.testing.assert_array_equal(quantiles(midpoints), scipy_ndtri(midpoints))
    assert np.abs(quantiles(midpoints)).max() < 5.42
    assert quantiles(np.array([0.0, 1.0, 0.5])).tolist() == [-np.inf, np.inf, 0.0]


def test_quality_draws_are_finite_at_both_ends() -> None:
    # the largest 24-bit uniform once rounded (in float32) to 1.0, whose quantile is +inf: a
    # document of infinite quality whose click gave its user an infinite time budget
    from recsim_gym.env.ie_kernel import normal_draw

    top, bottom = (2**24 - 1) / 2**24, 0.0
    assert np.isfinite(normal_draw(top)) and normal_draw(top) > 5.0
    assert normal_draw(bottom) == -normal_draw(top)
