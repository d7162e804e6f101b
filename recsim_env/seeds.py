"""Every user-seed scheme of the project, in one place.

A user's episode is fixed by its seed (:mod:`recsim_gym.env.rng`), so which seeds train and which
evaluate decides whether a result is honest. The uses, for seed ``s``:

============================ ============================================= ===================
use                          first user                                    who uses it
============================ ============================================= ===================
agent's own training users   ``10**6 + s * 10**5``                         SlateQ's ``learn``
harness training users       ``TRAIN_SEED_BASE * (s + 1)``                 ``recsim run``
harness evaluation users     ``EVAL_SEED_BASE + s * EVAL_SEED_STRIDE``     ``recsim run``
click models' logged users   ``10**7 + s * 10**6 + r * 500_000``, round r  click models
tuning training users        ``s * TUNE_STRIDE``, ``s >= FIRST_TUNING_SEED``  ``scripts/tune.py``
tuning evaluation users      ``TUNE_SEED_BASE + s * TUNE_STRIDE``          ``scripts/tune.py``
off-policy evaluation logs   ``OPE_SEED_BASE + r * OPE_STRIDE``, repetition r  ``recsim ope``
its reward model's log       ``OPE_SEED_BASE + r * OPE_STRIDE + OPE_MODEL``  ``recsim ope``
simulated logs of a fit      ``FIT_SIM_SEED`` on (the same users every time)  ``recsim fit``
a fit's bias-correction logs ``FIT_REPLICATE_BASE + r * FIT_REPLICATE_STRIDE``  ``recsim fit``
============================ ============================================= ===================

Worlds are split the same way (:mod:`recsim_gym.env.suite`): world seeds below
``FIRST_HELDOUT_WORLD`` are tuning worlds, those from it to ``LAST_WORLD`` held-out worlds.
Tuning (``scripts/tune.py``, a config with ``env.suite: tuning``) refuses held-out worlds, and
a tuning suite trains and evaluates on the tuning users above; a held-out suite is a harness
run, on the harness's users.

The agent's own training users are those of deep and tabular SlateQ, whose ``learn`` resets
the env it is given with them. The click models log their own users from a logging policy
(``learn`` refits every ``retrain_every`` steps on a fresh round r). Evaluation cohorts hold at
most ``EVAL_SEED_STRIDE`` users, so the seeds' cohorts never overlap; tuning seeds start at
``FIRST_TUNING_SEED`` so that tuning never sees the harness's seeds or users.
"""

from __future__ import annotations

TRAIN_SEED_BASE = 1_000_000
EVAL_SEED_BASE = 900_000_000
EVAL_SEED_STRIDE = 1_000_000
TUNE_SEED_BASE = 300_000_000
TUNE_STRIDE = 1_000_000
FIRST_TUNING_SEED = 100
OPE_SEED_BASE = 600_000_000
OPE_STRIDE = 10_000_000
OPE_MODEL = 5_000_000
FIT_SIM_SEED = 700_000_000
FIT_REPLICATE_BASE = 760_000_000
FIT_REPLICATE_STRIDE = 10_000_000


def agent_train_seed(seed: int) -> int:
    """First training user of an agent that builds its own env (``learn(env=None)``)."""
    return 10**6 + seed * 10**5


def click_log_seed(seed: int, round_index: int = 0) -> int:
    """First logged user of a click model seeded ``seed``, in refit round ``round_index``."""
    return 10**7 + seed * 10**6 + round_index * 500_000


def fit_replicate_seed(replicate: int) -> int:
    """First user of a fit's bias-correction log ``replicate`` (each holds fewer than
    ``FIT_REPLICATE_STRIDE`` users)."""
    return FIT_REPLICATE_BASE + replicate * FIT_REPLICATE_STRIDE


def ope_log_seed(repetition: int, model: bool = False) -> int:
    """First user of repetition ``repetition``'s off-policy log (or of the separate log its
    reward model is fit on, with ``model``); each log holds fewer than ``OPE_MODEL`` users."""
    return OPE_SEED_BASE + repetition * OPE_STRIDE + (OPE_MODEL if model else 0)


def train_seed(seed: int) -> int:
    """First training user of the harness's seed ``seed``."""
    return TRAIN_SEED_BASE * (seed + 1)


def eval_seed(seed: int) -> int:
    """First held-out evaluation user of the harness's seed ``seed``."""
    return EVAL_SEED_BASE + seed * EVAL_SEED_STRIDE


def check_tuning_seed(seed: int) -> int:
    """``seed`` if it is a tuning seed, else ``ValueError`` (seeds below are the harness's)."""
    if seed < FIRST_TUNING_SEED:
        raise ValueError(f"tuning seeds must be >= {FIRST_TUNING_SEED} (seeds below are the "
                         f"harness's), got {seed}")
    return seed


def tune_train_seed(seed: int) -> int:
    """First training user of tuning seed ``seed``."""
    return check_tuning_seed(seed) * TUNE_STRIDE


def tune_eval_seed(seed: int) -> int:
    """First evaluation user of tuning seed ``seed``."""
    return TUNE_SEED_BASE + check_tuning_seed(seed) * TUNE_STRIDE


#: First held-out world seed: world seeds below it are tuning worlds.
FIRST_HELDOUT_WORLD = 1_000
#: Last world seed of the suite.
LAST_WORLD = 1_999


def world_split(seed: int) -> str:
    """``"tuning"`` or ``"held_out"``: the split world seed ``seed`` belongs to."""
    if not 0 <= seed <= LAST_WORLD:
        raise ValueError(f"world seed must be in [0, {LAST_WORLD}], got {seed}")
    return "tuning" if seed < FIRST_HELDOUT_WORLD else "held_out"


def check_tuning_world(seed: int) -> int:
    """``seed`` if it is a tuning world, else ``ValueError`` (held-out worlds are run once,
    after tuning has ended)."""
    if world_split(seed) != "tuning":
        raise ValueError(f"world {seed} is a held-out world (seeds {FIRST_HELDOUT_WORLD}..{LAST_WORLD}); "
                         f"tuning uses worlds 0..{FIRST_HELDOUT_WORLD - 1}")
    return seed
