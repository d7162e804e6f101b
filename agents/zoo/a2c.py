"""RL Zoo hyperparameters of SB3 A2C (``--conf-file recsim_gym.agents.zoo.a2c``)."""

from recsim_gym.agents.zoo import load

hyperparams = load("a2c")
