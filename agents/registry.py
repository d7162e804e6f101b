"""Agent registry: names -> factories, plug-ins via entry points, and ``module:Class`` strings.

* ``register(name, factory, description)`` - add an agent (built-ins register themselves);
* third-party packages declare an entry point in the group ``recsim.agents``::

      [project.entry-points."recsim.agents"]
      my_agent = "my_package.agents:MyAgent"

* anywhere an agent name is accepted, ``"package.module:ClassName"`` works too;
* ``make(name, **kwargs)`` builds one; an unknown name lists the known ones.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib import metadata
from typing import Any

from recsim_gym.agents.base import check_agent

ENTRY_POINT_GROUP = "recsim.agents"

_REGISTRY: dict[str, tuple[Callable[..., Any] | str, str]] = {}
#: Built-in agents: name -> ("module:attribute", description); imported lazily on first use so
#: that listing agents does not import torch.
BUILTINS: dict[str, tuple[str, str]] = {
    "random": ("recsim_gym.agents.reference:RandomAgent", "uniform random slates"),
    "oracle_myopic": ("recsim_gym.agents.reference:OracleMyopicAgent",
                      "best immediate expected reward under the true model (reads the latent "
                      "state: an upper bound for myopic play)"),
    "popularity": ("recsim_gym.agents.bandits:PopularityAgent",
                   "items that earned the most reward per impression so far (online)"),
    "epsilon_greedy": ("recsim_gym.agents.bandits:EpsilonGreedyAgent",
                       "linear click model, epsilon-greedy exploration (online)"),
    "linucb": ("recsim_gym.agents.bandits:LinUCBAgent",
               "linear click model, upper confidence bound (online)"),
    "thompson": ("recsim_gym.agents.bandits:ThompsonAgent", "linear click model, Thompson sampling (online)"),
    "logreg": ("recsim_gym.agents.click_models:LogRegAgent",
               "logistic-regression click/conversion model fit on logs, best predicted-reward slate (MNL)"),
    "two_tower": ("recsim_gym.agents.click_models:TwoTowerAgent",
                  "two-tower (item-id + feature towers) click model, best predicted-reward slate (MNL)"),
    "din": ("recsim_gym.agents.click_models:DINAgent",
            "DIN-style attention click model on logs, best predicted-reward slate (MNL)"),
    "ppo_attention": ("recsim_gym.agents.ppo_attention:ppo_attention",
                      "PPO (SB3), attention over history and candidates, Plackett-Luce slates"),
    "ppo_mlp": ("recsim_gym.agents.ppo_attention:ppo_mlp", "PPO (SB3), MLP encoder (ablation)"),
    "slateq": ("recsim_gym.agents.slateq:SlateQAgent",
               "deep SlateQ: item-level Q, learned conditional-logit choice, exact slate optimiser"),
    "slate_q_tabular": ("recsim_gym.agents.slate_q_tabular:TabularSlateQAgent",
                        "tabular SlateQ over a bucketed state and item abstraction"),
    "full_slate_q": ("recsim_gym.agents.slate_q_tabular:FullSlateQAgent",
                     "tabular Q over whole slates (tiny configs only: shows why SlateQ decomposes)"),
}


def register(name: str, factory: Callable[..., Any] | str, description: str = "") -> None:
    """Register ``factory`` (a class, a callable or a ``module:attr`` string) under ``name``."""
    if not name or ":" in name:
        raise ValueError(f"agent names must be non-empty and contain no ':', got {name!r}")
    _REGISTRY[name] = (factory, description)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _import_attr(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'package.module:ClassName', got {spec!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r}") from err


def list_agents() -> dict[str, str]:
    """Every known agent name with its description (built-ins, registered, plug-ins)."""
    names = {name: description for name, (_, description) in BUILTINS.items()}
    names.update({name: description for name, (_, description) in _REGISTRY.items()})
    for name, ep in _entry_points().items():
        names.setdefault(name, f"plug-in ({ep.value})")
    return dict(sorted(names.items()))


def resolve(name: str) -> Callable[..., Any]:
    """The factory of ``name`` (registered, built-in, entry point, or ``module:Class``)."""
    if ":" in name:
        return _import_attr(name)
    if name in _REGISTRY:
        factory = _REGISTRY[name][0]
        return _import_attr(factory) if isinstance(factory, str) else factory
    if name in BUILTINS:
        return _import_attr(BUILTINS[name][0])
    plugins = _entry_points()
    if name in plugins:
        return plugins[name].load()
    raise KeyError(f"unknown agent {name!r}; known agents: {', '.join(list_agents())} "
                   "(or give 'package.module:ClassName')")


def make(name: str, params: Any = None, seed: int | None = None, **kwargs: Any) -> Any:
    """Build agent ``name`` with keyword arguments and check it fits the protocol.

    ``params`` (the world's Params) and ``seed`` are passed only to factories that declare a
    parameter of that name, so agents that infer sizes from observations need not accept them.
    """
    factory = resolve(name)
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(set(kwargs) - set(accepted)) if accepted and not takes_any else []
    if unknown:  # worded as a Config's unknown field, the message of agents with a config class
        valid = [key for key in accepted if key not in ("params", "seed", "self")]
        owner = getattr(factory, "__name__", name)
        raise ValueError(f"unknown {owner} field(s) {unknown}; valid fields: {valid}"
                         + ("" if valid else f" ({name!r} takes no hyperparameters)"))
    for key, value in (("params", params), ("seed", seed)):
        if value is not None and key in accepted and key not in kwargs:
            kwargs[key] = value
    try:
        agent = factory(**kwargs)
    except TypeError as err:
        raise TypeError(f"could not build agent {name!r} with {sorted(kwargs)}: {err}") from err
    check_agent(agent, name)
    return agent
