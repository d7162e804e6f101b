"""Agent files (issue 22, item 1): every kind round-trips, no file runs code when loaded, and a
wrong, corrupted or foreign file raises AgentFileError saying what it expected."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from recsim_gym.agents import registry
from recsim_gym.agents.base import BaseAgent
from recsim_gym.agents.persistence import AgentFileError
from recsim_gym.env.simulator import make_simulator

SIMPLE = ["random", "oracle_myopic", "popularity", "epsilon_greedy", "linucb", "thompson", "logreg"]


def _obs(latent: bool = False) -> dict[str, np.ndarray]:
    sim = make_simulator("default", observe_latent=latent)
    return sim.observe(sim.reset(np.arange(6, dtype=np.uint64)))


def _trained(name: str) -> BaseAgent:
    params = make_simulator("default").params
    agent = registry.make(name, params=params, seed=2)
    if callable(getattr(agent, "learn", None)):
        from recsim_gym.experiments.evaluate import make_train_env

        agent.learn(make_train_env(agent, params, 16, 5), 600)
    return agent


@pytest.mark.parametrize("name", SIMPLE)
def test_every_simple_agent_round_trips_to_the_same_slates(tmp_path: Path, name: str) -> None:
    agent = _trained(name)
    agent.save(tmp_path / "agent.zip")
    restored = type(agent).load(tmp_path / "agent.zip")
    obs = _obs(latent=getattr(agent, "requires_latent", False))
    np.testing.assert_array_equal(restored.act(obs), agent.act(obs))  # rngs restored too
    np.testing.assert_array_equal(restored.act(obs), agent.act(obs))
    assert BaseAgent.load(tmp_path / "agent.zip").act(obs).shape == (6, 5)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(MARKER),))


MARKER = "/tmp/recsim_agent_payload_marker"


def _crafted_files(tmp_path: Path) -> dict[str, Path]:
    """Files that would create MARKER if anything unpickled them."""
    bomb = pickle.dumps(_Payload())
    files = {}
    files["raw_pickle"] = tmp_path / "raw.pkl"
    files["raw_pickle"].write_bytes(bomb)
    files["pickled_npz"] = tmp_path / "arrays.zip"
    good = tmp_path / "good.zip"
    _trained("random").save(good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(files["pickled_npz"], "w") as dst:
        dst.writestr("meta.json", src.read("meta.json").decode().replace(
            '"slate_size": 5', '"slate_size": {"__array__": "x"}'))
        buffer = io.BytesIO()
        np.savez(buffer, x=np.array([_Payload()], dtype=object))
        dst.writestr("arrays.npz", buffer.getvalue())
        dst.writestr("tensors.pt", bomb)
    files["pickled_tensors"] = tmp_path / "tensors.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(files["pickled_tensors"], "w") as dst:
        dst.writestr("meta.json", src.read("meta.json"))
        dst.writestr("arrays.npz", src.read("arrays.npz"))
        torch_bomb = io.BytesIO()
        torch.save({"x": _Payload()}, torch_bomb)
        dst.writestr("tensors.pt", torch_bomb.getvalue())
    files["torch_pickle"] = tmp_path / "slateq.pt"
    torch.save({"config": {}, "x": _Payload()}, files["torch_pickle"])
    return files


@pytest.mark.parametrize("kind", ["raw_pickle", "pickled_npz", "pickled_tensors", "torch_pickle"])
def test_a_crafted_file_does_not_run_its_payload(tmp_path: Path, kind: str) -> None:
    from recsim_gym.agents.slate_q_tabular import TabularSlateQAgent
    from recsim_gym.agents.slateq import SlateQAgent

    Path(MARKER).unlink(missing_ok=True)
    path = _crafted_files(tmp_path)[kind]
    for loader in (BaseAgent.load, SlateQAgent.load, TabularSlateQAgent.load):
        with pytest.raises(AgentFileError):
            loader(path)
    assert not Path(MARKER).exists(), "loading ran code from the file"


def test_ppo_files_refuse_to_unpickle_by_default(tmp_path: Path) -> None:
    from recsim_gym.agents.ppo_attention import PPOSlateAgent

    path = tmp_path / "model.zip"
    path.write_bytes(b"PK")
    with pytest.raises(AgentFileError, match="allow_pickle=True only for a file you trust"):
        PPOSlateAgent.load(path)
    with pytest.raises(AgentFileError, match="not a PPO agent file"):
        PPOSlateAgent.load(path, allow_pickle=True)


def test_wrong_or_damaged_files_say_what_they_are(tmp_path: Path) -> None:
    from recsim_gym.agents.bandits import LinUCBAgent
    from recsim_gym.agents.slate_q_tabular import TabularSlateQAgent
    from recsim_gym.agents.slateq import SlateQAgent

    good = tmp_path / "random.zip"
    _trained("random").save(good)
    with pytest.raises(AgentFileError, match="holds a .*RandomAgent.*not a LinUCBAgent"):
        LinUCBAgent.load(good)
    cases = {"empty": b"", "text": b"hello", "truncated": good.read_bytes()[:100]}
    for label, data in cases.items():
        path = tmp_path / f"{label}.zip"
        path.write_bytes(data)
        for loader in (BaseAgent.load, SlateQAgent.load, TabularSlateQAgent.load):
            with pytest.raises(AgentFileError, match=str(path)):
                loader(path)
    for field, value in (("format", "recsim-agent/0"), ("class", "os:system")):
        path = tmp_path / f"{field}.zip"
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
            meta = json.loads(src.read("meta.json"))
            meta[field] = value
            dst.writestr("meta.json", json.dumps(meta))
            dst.writestr("arrays.npz", src.read("arrays.npz"))
            dst.writestr("tensors.pt", src.read("tensors.pt"))
        with pytest.raises(AgentFileError, match="expected 'recsim-agent/1'|not a BaseAgent"):
            BaseAgent.load(path)
    with pytest.raises(AgentFileError, match="not a SlateQ agent file"):
        SlateQAgent.load(good)
    with pytest.raises(AgentFileError, match="not a tabular SlateQ agent file"):
        TabularSlateQAgent.load(good)
