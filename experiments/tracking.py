"""Training curves where researchers look: TensorBoard and Weights & Biases, one hook.

A :class:`JobTracker` receives one job's rows: every evaluation on held-out users (the rows of
``evaluations.csv``, logged as ``eval/<metric>`` at their ``env_steps``) and the agent's own
training diagnostics (``agent.last_training_row``: losses, episode returns, exploration, logged
as ``train/<name>``). Which backends receive them is the config's ``logging`` section; both
are optional extras (``pip install 'recsim-gym[tensorboard]'`` / ``[wandb]``), checked when
the config is read.

TensorBoard event files go to ``<run>/tensorboard/<agent>__seed<s>/`` (``tensorboard
--logdir <run>/tensorboard``); a re-run job replaces its own directory.
"""

from __future__ import annotations

import math
import numbers
import shutil
from pathlib import Path
from typing import Any

from recsim_gym.experiments.config import LoggingConfig


class JobTracker:
    """Forwards one job's evaluation and training rows to the configured backends."""

    def __init__(self, logging: LoggingConfig, run_dir: Path | None, key: str, run_name: str,
                 job_config: dict[str, Any]):
        self._writer = self._wandb = None
        self._last_train_step = -1
        if logging.tensorboard and run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            directory = Path(run_dir) / "tensorboard" / key
            shutil.rmtree(directory, ignore_errors=True)  # a re-run job starts a fresh curve
            self._writer = SummaryWriter(log_dir=str(directory))
        if logging.wandb:
            import wandb

            self._wandb = wandb.init(name=key, group=logging.wandb.get("group", run_name),
                                     config=job_config, reinit="create_new",
                                     dir=str(run_dir) if run_dir is not None else None,
                                     **{k: v for k, v in logging.wandb.items() if k != "group"})

    def _log(self, prefix: str, row: dict[str, Any], step: int) -> None:
        values = {f"{prefix}/{name.split('/')[-1] if prefix == 'train' else name}": float(value)
                  for name, value in row.items() if name != "env_steps"
                  and isinstance(value, numbers.Real) and not isinstance(value, bool)
                  and math.isfinite(value)}
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, global_step=step)
        if self._wandb is not None and values:
            self._wandb.log({**values, "env_steps": step})

    def evaluation(self, row: dict[str, Any]) -> None:
        """One evaluation row (``env_steps`` and the metrics of ``evaluations.csv``)."""
        self._log("eval", row, int(row["env_steps"]))

    def training(self, row: dict[str, Any] | None, steps_done: int) -> None:
        """The agent's newest training row, once per step count."""
        if row is None or steps_done == self._last_train_step:
            return
        self._last_train_step = steps_done
        self._log("train", row, steps_done)

    def close(self) -> None:
        """Flush and close every backend."""
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()
