"""Why deep SlateQ's policy changes with longer training: measurements at checkpoints.

Trains one SlateQ agent (tuning seed) and every ``--every`` env steps runs held-out tuning
users through the env with the latent state exposed to this script only (the agent reads its
three observation keys) and measures, for the averaged weights that ``act`` uses and for the
online weights:

* the lifetime return, CTR, session length;
* the true quality of the shown and of the clicked items (interest evolution: quality > 0 is a
  "nutritious" document that extends the user's time budget);
* Q calibration: the decomposed ``Q(s, A)`` of each shown slate (in reward-scaled units)
  against the discounted return that actually followed in that episode;
* the choice model: its predicted click probability of the shown slate against the clicks,
  and its log-loss on the choice.

``python scripts/slateq_diagnose.py --preset interest_evolution --steps 400000 --every 50000
--kwargs '{"learning_rate": 1e-3}' --json out.json``
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from recsim_gym.agents.slateq import OBS_KEYS, SlateQAgent, SlateQConfig, _tensors
from recsim_gym.env import RecSimVectorEnv, seeds
from recsim_gym.env.simulator import make_simulator
from recsim_gym.experiments.evaluate import make_train_env


@torch.no_grad()
def measure(agent: SlateQAgent, preset: str, overrides: dict[str, Any], users: int, seed: int,
            online: bool) -> dict[str, float]:
    """One cohort of held-out users to the end of their lifetimes with the agent's greedy slates."""
    cfg = agent.config
    if online:  # act with the online weights: hide the averages for this measurement
        saved, agent.averaged = agent.averaged, {}
    env = RecSimVectorEnv(users, preset=preset, observe_latent=True, **overrides)
    obs, _ = env.reset(seed=seed)
    alive = np.ones(users, bool)
    rewards: list[np.ndarray] = []
    q_pred: list[np.ndarray] = []
    clicks, probs, shown_q, clicked_q, lengths = [], [], [], [], np.zeros(users)
    losses = []
    budgets: list[np.ndarray] = []
    hidden: list[np.ndarray] = []
    satisfaction: list[np.ndarray] = []
    q_net, choice_net = agent.q, agent.choice
    if agent.averaged and not online:
        q_net, choice_net = agent.averaged["q"], agent.averaged["choice"]
    k = agent.slate_size
    while alive.any():
        seen = {key: obs[key] for key in OBS_KEYS}
        slates = agent.act(seen)
        x = agent._prepared(_tensors(seen))
        q_items, q_none = q_net(x)
        utility, _ = choice_net(x)
        logits = choice_net.slate_logits(utility, torch.from_numpy(slates))
        p = logits.softmax(1)
        value = (p[:, :k] * q_items.gather(1, torch.from_numpy(slates))).sum(1) + p[:, k] * q_none
        quality = obs["candidate_quality"]
        next_obs, reward, terminated, truncated, info = env.step(slates)
        rewards.append(np.where(alive, reward, 0.0))
        q_pred.append(np.where(alive, value.numpy(), np.nan))
        live = np.flatnonzero(alive)
        clicks.append(info["click"][live])
        probs.append(1.0 - p[live, k].numpy())
        choice = np.where(info["click"], info["position"], k)[live]
        losses.append(-np.log(np.maximum(p[live].numpy()[np.arange(live.size), choice], 1e-12)))
        shown_q.append(np.take_along_axis(quality[live], slates[live], axis=1).mean(1))
        hit = live[info["click"][live]]
        clicked = slates[hit, info["position"][hit]]  # candidate index of the clicked item
        clicked_q.append(quality[hit, clicked] if hit.size else np.zeros(0))
        if "satisfaction" in obs:  # the default family: the hidden state that drives churn
            satisfaction.append(np.where(alive, obs["satisfaction"][:, 0], np.nan))
        if "time_budget" in obs:
            budgets.append(np.where(alive, obs["time_budget"][:, 0], np.nan))
            # the part of the budget the observation does not show: time_budget - watched -
            # no-click penalties (user features are both over the initial budget)
            seen_budget = env.params.time_budget * (1.0 - obs["user"][:, -2] - obs["user"][:, -1])
            hidden.append(np.where(alive, obs["time_budget"][:, 0] - seen_budget, np.nan))
        lengths[live] += 1
        alive &= ~(terminated | truncated)
        obs = next_obs
    if online:
        agent.averaged = saved
    r = np.array(rewards) * cfg.reward_scale  # (steps, users)
    discounted = np.zeros_like(r)
    running = np.zeros(users)
    for step in range(len(r) - 1, -1, -1):
        running = r[step] + cfg.gamma * running
        discounted[step] = running
    predicted = np.array(q_pred)
    mask = ~np.isnan(predicted)
    clicks_all, probs_all = np.concatenate(clicks), np.concatenate(probs)
    budget_terms = {}
    if budgets:  # interest evolution: how Q and the realised return depend on the hidden budget
        budget = np.array(budgets)[mask]
        q, g = predicted[mask], discounted[mask]
        budget_terms = {"corr_return_budget": float(np.corrcoef(g, budget)[0, 1]),
                        "corr_q_budget": float(np.corrcoef(q, budget)[0, 1]),
                        "slope_return_per_budget": float(np.polyfit(budget, g, 1)[0]),
                        "slope_q_per_budget": float(np.polyfit(budget, q, 1)[0]),
                        "q_bias_low_budget": float((q - g)[budget < np.quantile(budget, 0.25)].mean()),
                        "q_bias_high_budget": float((q - g)[budget > np.quantile(budget, 0.75)].mean()),
                        "corr_error_hidden_budget": float(np.corrcoef(q - g, np.array(hidden)[mask])[0, 1]),
                        "corr_error_seen_budget": float(
                            np.corrcoef(q - g, budget - np.array(hidden)[mask])[0, 1]),
                        "hidden_budget_sd": float(np.nanstd(np.array(hidden)[mask]))}
    if satisfaction:
        level = np.array(satisfaction)[mask]
        q, g = predicted[mask], discounted[mask]
        budget_terms = {"corr_error_satisfaction": float(np.corrcoef(q - g, level)[0, 1]),
                        "corr_return_satisfaction": float(np.corrcoef(g, level)[0, 1]),
                        "corr_q_satisfaction": float(np.corrcoef(q, level)[0, 1]),
                        "q_bias_low_satisfaction": float((q - g)[level < np.quantile(level, 0.25)].mean())}
    return {**budget_terms, "return": float(np.array(rewards).sum(0).mean()),
            "session_length": float(lengths.mean()),
            "ctr": float(clicks_all.mean()), "predicted_ctr": float(probs_all.mean()),
            "choice_log_loss": float(np.concatenate(losses).mean()),
            "shown_quality": float(np.concatenate(shown_q).mean()),
            "clicked_quality": float(np.concatenate(clicked_q).mean()),
            "q_mean": float(predicted[mask].mean()), "return_to_go_mean": float(discounted[mask].mean()),
            "q_bias": float((predicted[mask] - discounted[mask]).mean()),
            "q_bias_first_step": float((predicted[0] - discounted[0]).mean())}


def main() -> None:
    """Train with checkpoints; print one line per checkpoint and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="interest_evolution")
    parser.add_argument("--set", default="{}", help="world overrides (JSON)")
    parser.add_argument("--kwargs", default="{}", help="SlateQConfig overrides (JSON)")
    parser.add_argument("--steps", type=int, default=400_000)
    parser.add_argument("--every", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds.check_tuning_seed(args.seed)
    overrides = json.loads(args.set)
    params = make_simulator(args.preset, **overrides).params
    config = SlateQConfig(preset=args.preset).replace(seed=args.seed, **json.loads(args.kwargs))
    agent = SlateQAgent(config, params=params)
    env = make_train_env(agent, params, 64, seeds.tune_train_seed(args.seed))
    rows = []
    next_at = [args.every]

    def checkpoint(_agent: Any, steps: int) -> bool:
        if steps >= next_at[0]:
            next_at[0] += args.every
            row = {"env_steps": steps, "epsilon": agent.epsilon, **{f"train_{k}": v for k, v in
                                                                  (agent.last_training_row or {}).items()
                                                                  if isinstance(v, float)}}
            for online in (False, True):
                measured = measure(agent, args.preset, overrides, args.users, seeds.tune_eval_seed(args.seed),
                                   online)
                row.update({f"{'online' if online else 'averaged'}/{k}": v for k, v in measured.items()})
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
        return True

    agent.learn(env, args.steps, callback=checkpoint)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
