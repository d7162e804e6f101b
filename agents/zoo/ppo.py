"""RL Zoo hyperparameters of SB3 PPO (``--conf-file recsim_gym.agents.zoo.ppo``)."""

from recsim_gym.agents.zoo import load

hyperparams = load("ppo")
