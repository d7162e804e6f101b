"""Experiment configuration: one YAML file, validated into dataclasses before anything runs.

Unknown keys and bad values raise :class:`ConfigError` naming the key path (for example
``eval.users`` or ``agents[2].params``) and what is allowed; every agent is built once with its
``params`` on the config's world, so its hyperparameters are checked before any training.
Example (``experiments/configs/*.yaml``)::

    name: quick
    env: {preset: default, overrides: {num_candidates: 20}}
    agents:
      - {name: random}
      - {name: linucb, params: {alpha: 1.0}}
    seeds: 3                      # or an explicit list: [0, 1, 2]
    train_steps: 20000            # env steps of training per (agent, seed), the same for all
    num_envs: 64                  # users stepped in parallel during training
    eval: {every_steps: 5000, users: 500, final_users: 2000}
    output_dir: runs/quick
    logging: {tensorboard: true}  # optional: pip install 'recsim-gym[tensorboard]'

A suite of worlds (:mod:`recsim_gym.env.suite`) in place of one preset runs every (world,
agent, seed); it needs the ``random`` and ``oracle_myopic`` agents, which normalise each world::

    env: {suite: held_out, worlds: 12}         # the first 12 held-out worlds, or a list of seeds
    env: {suite: tuning, worlds: 8, presets: [default, static]}   # tuning: seeds >= 100

A world fitted to logs by ``recsim fit`` (its Params and item table): ``env: {fitted: fit/world.json}``.

Every problem of a config is reported at once, one line per key path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """An invalid experiment config; the message names the key."""


@dataclass(frozen=True)
class EnvConfig:
    """Which world the experiment runs in: one preset with overrides, or a suite of worlds."""

    preset: str = "default"  #: preset name (``python -m recsim_gym.env envs``)
    overrides: dict[str, Any] = field(default_factory=dict)  #: Params field overrides
    suite: str = ""  #: ``tuning`` or ``held_out``: every world of these suite seeds instead
    worlds: tuple[int, ...] = ()  #: world seeds of the suite (``worlds: N``: the split's first N)
    presets: tuple[str, ...] = ()  #: named presets run beside a tuning suite's worlds


@dataclass(frozen=True)
class World:
    """One world of an experiment: a preset with overrides, named in job files and tables."""

    name: str  #: the preset's name, or ``w<seed>`` for a suite world
    preset: str
    overrides: dict[str, Any]
    split: str = "preset"  #: ``preset``, ``tuning`` or ``held_out``
    static_like: bool = False  #: myopic play is optimal (the static preset's dynamics)

    @property
    def spec(self) -> dict[str, Any]:
        """What a job's result depends on: the preset and its overrides."""
        return {"preset": self.preset, "overrides": dict(self.overrides)}


#: Named presets that are static-like (myopic play is optimal there).
STATIC_PRESETS = ("static",)


def config_worlds(env: EnvConfig) -> tuple[World, ...]:
    """The worlds of ``env``: its one preset, or the suite's worlds (and named presets)."""
    if not env.suite:
        return (World(env.preset, env.preset, dict(env.overrides), "preset", env.preset in STATIC_PRESETS),)
    from recsim_gym.env.suite import suite_worlds

    worlds = [World(w.name, "default", w.overrides, w.split, w.static_like)
              for w in suite_worlds(env.suite, seeds=list(env.worlds))]
    return (*worlds, *(World(p, p, {}, "preset", p in STATIC_PRESETS) for p in env.presets))


@dataclass(frozen=True)
class AgentConfig:
    """One agent of the comparison."""

    name: str  #: registry name (``recsim agents``) or ``package.module:ClassName``
    label: str = ""  #: name in tables and plots (default: ``name``)
    params: dict[str, Any] = field(default_factory=dict)  #: constructor keyword arguments

    @property
    def display(self) -> str:
        """The label shown in results."""
        return self.label or self.name


@dataclass(frozen=True)
class EvalConfig:
    """When and on how many held-out users agents are evaluated."""

    every_steps: int = 0  #: evaluate every N training env steps (0: only at the end)
    users: int = 500  #: users per intermediate evaluation
    final_users: int = 2000  #: users of the final evaluation


@dataclass(frozen=True)
class LoggingConfig:
    """Where training curves go besides the run's CSV and plots (optional extras)."""

    tensorboard: bool = False  #: TensorBoard event files in ``<run>/tensorboard/<job>/``
    wandb: dict[str, Any] = field(default_factory=dict)  #: W&B ``init`` arguments (project, ...)


#: The W&B ``init`` arguments a config may give under ``logging.wandb``.
WANDB_KEYS = ("project", "entity", "group", "mode", "tags")


@dataclass(frozen=True)
class ExperimentConfig:
    """A full experiment: every (agent, seed) pair is trained with the same budget."""

    name: str
    agents: tuple[AgentConfig, ...]
    env: EnvConfig = field(default_factory=EnvConfig)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    train_steps: int = 0
    num_envs: int = 64
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = ""
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for the run manifest)."""
        return dataclasses.asdict(self)

    @property
    def worlds(self) -> tuple[World, ...]:
        """The worlds every (agent, seed) pair runs in (one, unless ``env.suite``)."""
        return config_worlds(self.env)

    @property
    def is_suite(self) -> bool:
        """Whether the experiment runs a suite of worlds (job files then name the world)."""
        return bool(self.env.suite)

    @property
    def tuning(self) -> bool:
        """A tuning suite: tuning worlds, tuning seeds and tuning users only."""
        return self.env.suite == "tuning"


def file_safe(label: str) -> str:
    """``label`` as it appears in job file names (characters other than letters, digits and
    ``-_.`` become ``_``); parse_config refuses labels that would collide."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def _keys(section: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key(s) {', '.join(prefix + str(k) for k in unknown)}; "
                          f"allowed: {sorted(allowed)}")
    return section


def _int(value: Any, where: str, low: int, high: int = 10**12) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {value!r}")
    return value


class _Problems:
    """Collects the :class:`ConfigError` of each independent check, so that one run of
    :func:`parse_config` reports every problem of a config at once."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, function: Any, *args: Any, default: Any = None) -> Any:
        """``function(*args)``, or ``default`` after noting its ConfigError."""
        try:
            return function(*args)
        except ConfigError as err:
            self.note(str(err))
            return default

    def note(self, message: str) -> None:
        """Record one problem."""
        self.messages.append(message)

    def raise_any(self, source: str) -> None:
        if len(self.messages) == 1:
            raise ConfigError(self.messages[0])
        if self.messages:
            raise ConfigError(f"config has {len(self.messages)} problems ({source}):\n  - "
                              + "\n  - ".join(self.messages))


def parse_config(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a config mapping (checks the env preset, overrides and agent names too);
    every problem found is reported in one :class:`ConfigError`, a line per key path."""
    problems = _Problems()
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping, got {type(raw).__name__}")
    top = raw
    problems.check(_keys, top, {"name", "env", "agents", "seeds", "train_steps", "num_envs", "eval",
                                "output_dir", "logging"}, "")
    name = problems.check(_str, top.get("name", Path(source).stem), "name", default="config")
    env = problems.check(_parse_env, top.get("env", {}), default=None)
    world = problems.check(_check_env, env) if env is not None else None
    num_envs = problems.check(_int, top.get("num_envs", 64), "num_envs", 1, 65536, default=64)
    agents = _parse_agents(top.get("agents"), world, num_envs, problems)
    seeds = problems.check(_parse_seeds, top.get("seeds", 5), default=(0,))
    if env is not None and env.suite:
        problems.check(_check_suite, env, agents, seeds)
    evaluation = _parse_eval(top.get("eval", {}) or {}, problems)
    train_steps = problems.check(_int, top.get("train_steps", 0), "train_steps", 0, default=0)
    output = top.get("output_dir")
    output_dir = (problems.check(_str, output, "output_dir", default="") if output not in (None, "")
                  else f"runs/{name}")
    logging = problems.check(_parse_logging, top.get("logging", {}) or {}, default=LoggingConfig())
    problems.raise_any(source)
    return ExperimentConfig(name=name, agents=tuple(agents), env=env, seeds=seeds,
                            train_steps=train_steps, num_envs=num_envs, eval=evaluation,
                            output_dir=output_dir, logging=logging)


def _parse_env(env_raw: Any) -> EnvConfig:
    env_raw = _keys(env_raw, {"preset", "overrides", "suite", "worlds", "presets", "fitted"}, "env")
    if "suite" in env_raw or "worlds" in env_raw or "presets" in env_raw:
        return _parse_suite(env_raw)
    if "fitted" in env_raw:
        return _parse_fitted(env_raw)
    overrides = env_raw.get("overrides", {}) or {}
    _keys(overrides, set(overrides) if isinstance(overrides, dict) else set(), "env.overrides")
    for reserved in ("preset", "params"):
        if reserved in overrides:
            raise ConfigError(f"env.overrides.{reserved}: overrides are Params fields; "
                              + ("give the preset as env.preset" if reserved == "preset"
                                 else "give Params fields directly under env.overrides"))
    return EnvConfig(preset=_str(env_raw.get("preset", "default"), "env.preset"),
                     overrides=dict(overrides))


def _parse_fitted(env_raw: dict[str, Any]) -> EnvConfig:
    """``env: {fitted: world.json, overrides: {...}}``: a world fitted by ``recsim fit`` (its
    Params overrides and item table), optionally with overrides of its own on top."""
    from recsim_gym.experiments.fit import load_fit

    if "preset" in env_raw:
        raise ConfigError("env.preset: a fitted world is the default family's; give env.fitted alone")
    path = _str(env_raw.get("fitted"), "env.fitted")
    try:
        fitted = load_fit(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"env.fitted: {err}") from err
    extra = env_raw.get("overrides", {}) or {}
    if not isinstance(extra, dict):
        raise ConfigError("env.overrides must be a mapping of Params fields")
    return EnvConfig(preset="default", overrides={**fitted, **extra})


def _parse_suite(env_raw: dict[str, Any]) -> EnvConfig:
    """``env: {suite: tuning | held_out, worlds: N | [seeds], presets: [...]}``."""
    from recsim_gym.env.presets import preset_names
    from recsim_gym.env.suite import SPLITS, suite_worlds

    suite = env_raw.get("suite")
    if suite not in SPLITS:
        raise ConfigError(f"env.suite must be one of {list(SPLITS)}, got {suite!r}")
    for key in ("preset", "overrides"):
        if key in env_raw:
            raise ConfigError(f"env.{key}: a suite's worlds are its own; give either env.suite or "
                              "env.preset/env.overrides")
    worlds = env_raw.get("worlds")
    try:
        if isinstance(worlds, int) and not isinstance(worlds, bool):
            chosen = suite_worlds(suite, count=worlds)
        elif isinstance(worlds, list) and worlds and all(
                isinstance(w, int) and not isinstance(w, bool) for w in worlds):
            if len(set(worlds)) != len(worlds):
                raise ConfigError(f"env.worlds must be distinct, got {worlds}")
            chosen = suite_worlds(suite, seeds=worlds)
        else:
            raise ConfigError("env.worlds must be a count or a non-empty list of world seeds, "
                              f"got {worlds!r}")
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"env.worlds: {err}") from err
    presets = env_raw.get("presets", []) or []
    if not isinstance(presets, list) or not all(isinstance(p, str) for p in presets):
        raise ConfigError(f"env.presets must be a list of preset names, got {presets!r}")
    if presets and suite != "tuning":
        raise ConfigError("env.presets: the named presets were tuned on; a held_out suite holds "
                          "held-out worlds only")
    unknown = sorted(set(presets) - set(preset_names()))
    if unknown:
        raise ConfigError(f"env.presets: unknown {unknown}; presets of the default world: {preset_names()}")
    return EnvConfig(suite=suite, worlds=tuple(w.seed for w in chosen), presets=tuple(presets))


def _check_suite(env: EnvConfig, agents: list[AgentConfig], seeds: tuple[int, ...]) -> None:
    """A suite normalises every world by its random and oracle-myopic returns, so it needs both
    agents; a tuning suite uses tuning seeds only."""
    from recsim_gym.env.seeds import FIRST_TUNING_SEED

    names = {a.name for a in agents}
    missing = sorted({"random", "oracle_myopic"} - names)
    if missing:
        raise ConfigError(f"agents: a suite needs {missing} (every world's scores are normalised by "
                          "its random and oracle-myopic returns)")
    if env.suite == "tuning" and min(seeds) < FIRST_TUNING_SEED:
        raise ConfigError(f"seeds: a tuning suite uses tuning seeds (>= {FIRST_TUNING_SEED}), got "
                          f"{list(seeds)}; e.g. seeds: [{FIRST_TUNING_SEED}, {FIRST_TUNING_SEED + 1}]")


def _parse_agents(agents_raw: Any, world: Any, num_envs: int, problems: _Problems
                  ) -> list[AgentConfig]:
    if not isinstance(agents_raw, list) or not agents_raw:
        problems.note(f"agents must be a non-empty list, got {agents_raw!r}")
        return []
    agents = []
    for i, a in enumerate(agents_raw):
        agent = problems.check(_parse_agent, a, f"agents[{i}]")
        if agent is None:
            continue
        agents.append(agent)
        if world is not None:
            problems.check(_check_agent, agent, f"agents[{i}]", world, num_envs)
    problems.check(_check_labels, agents)
    return agents


def _parse_agent(a: Any, where: str) -> AgentConfig:
    if isinstance(a, str):
        a = {"name": a}
    a = _keys(a, {"name", "label", "params"}, where)
    params = a.get("params", {}) or {}
    _keys(params, set(params) if isinstance(params, dict) else set(), f"{where}.params")
    label = a.get("label", "")
    if label not in ("", None):
        label = _str(label, f"{where}.label")
    return AgentConfig(name=_str(a.get("name"), f"{where}.name"), label=label or "",
                       params=dict(params))


def _check_labels(agents: list[AgentConfig]) -> None:
    labels = [a.display for a in agents]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ConfigError(f"agents: labels must be unique, repeated: {duplicates} "
                          "(give each a distinct `label`)")
    files: dict[str, str] = {}
    for label in labels:
        other = files.setdefault(file_safe(label), label)
        if other != label:
            raise ConfigError(f"agents: labels {other!r} and {label!r} both name job files "
                              f"{file_safe(label)!r}__seed*.json (labels may differ only in "
                              "letters, digits and -_.); give one a distinct `label`")


def _parse_seeds(seeds_raw: Any) -> tuple[int, ...]:
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        return tuple(range(_int(seeds_raw, "seeds", 1, 1000)))
    if isinstance(seeds_raw, list) and seeds_raw:
        seeds = tuple(_int(s, f"seeds[{i}]", 0, 2**31 - 1) for i, s in enumerate(seeds_raw))
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct, got {seeds_raw}")
        return seeds
    raise ConfigError(f"seeds must be a count >= 1 or a non-empty list, got {seeds_raw!r}")


def _parse_eval(ev: Any, problems: _Problems) -> EvalConfig:
    """``eval``, each field checked on its own (a bad one falls back to its default)."""
    default = EvalConfig()
    ev = problems.check(_keys, ev, {"every_steps", "users", "final_users"}, "eval", default={})
    return EvalConfig(
        every_steps=problems.check(_int, ev.get("every_steps", 0), "eval.every_steps", 0,
                                   default=default.every_steps),
        users=problems.check(_int, ev.get("users", 500), "eval.users", 1, 10**7,
                             default=default.users),
        final_users=problems.check(_int, ev.get("final_users", 2000), "eval.final_users", 1,
                                   10**7, default=default.final_users))


def _extra_installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _parse_logging(raw: Any) -> LoggingConfig:
    """``logging``: optional TensorBoard and W&B; a missing extra fails here, before training."""
    raw = _keys(raw, {"tensorboard", "wandb"}, "logging")
    tensorboard = raw.get("tensorboard", False)
    if not isinstance(tensorboard, bool):
        raise ConfigError(f"logging.tensorboard must be true or false, got {tensorboard!r}")
    if tensorboard and not _extra_installed("tensorboard"):
        raise ConfigError("logging.tensorboard needs TensorBoard, which is not installed: "
                          "pip install 'recsim-gym[tensorboard]'")
    wandb = raw.get("wandb") or {}
    if wandb:
        wandb = _keys(wandb, set(WANDB_KEYS), "logging.wandb")
        _str(wandb.get("project"), "logging.wandb.project")
        if wandb.get("mode", "online") not in ("online", "offline", "disabled"):
            raise ConfigError(f"logging.wandb.mode must be 'online', 'offline' or 'disabled', got "
                              f"{wandb['mode']!r}")
        if not _extra_installed("wandb"):
            raise ConfigError("logging.wandb needs Weights & Biases, which is not installed: "
                              "pip install 'recsim-gym[wandb]'")
    return LoggingConfig(tensorboard=tensorboard, wandb=dict(wandb))


def _check_env(env: EnvConfig) -> Any:
    """The world's Params (validates the preset and every override); a suite's first world's."""
    from recsim_gym.env.simulator import all_preset_names, make_simulator

    if env.suite:  # every suite world is valid by construction; agents are checked on the first
        return make_simulator("default", **config_worlds(env)[0].overrides).params
    if env.preset not in all_preset_names():
        raise ConfigError(f"env.preset {env.preset!r} is unknown; known: {all_preset_names()}")
    try:
        return make_simulator(env.preset, **env.overrides).params
    except ValueError as err:
        raise ConfigError(f"env.overrides: {err}") from err


def _check_agent(agent: AgentConfig, where: str, params: Any, num_envs: int) -> None:
    """Resolve the agent's name, then build it once with its params on the config's world, so an
    unknown or out-of-range hyperparameter fails before any training (agents check their own
    values through :class:`recsim_gym.env.fields.Config`), and ask it (``check_train_env``, when
    it has one) whether it can train on ``num_envs`` users."""
    from recsim_gym.agents import registry

    try:
        registry.resolve(agent.name)
    except (KeyError, ValueError, ImportError, AttributeError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ConfigError(f"{where}.name: {message}") from err
    try:
        built = registry.make(agent.name, params=params, seed=0, **agent.params)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"{where}.params: {err}") from err
    check = getattr(built, "check_train_env", None)
    if callable(check):
        try:
            check(num_envs)
        except ValueError as err:
            raise ConfigError(f"num_envs ({num_envs}) does not suit {where} "
                              f"({agent.display}): {err}") from err


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (plain YAML
    silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"the key {key!r} appears twice in one mapping (lines "
                                  f"{seen[key].line + 1} and {key_node.start_mark.line + 1})")
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give the YAML config file inside it")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}): save the config as UTF-8"
                          ) from err
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    return parse_config(raw if raw is not None else {}, source=str(path))
