"""scripts/paired_runs.py pairs seeds across runs; the committed interest-evolution claim holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.paired_runs import final_returns, main

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


def test_longer_training_does_not_hurt_slateq_on_interest_evolution(capsys: pytest.CaptureFixture) -> None:
    long, short = final_returns(RESULTS / "interest_evolution", "slateq"), final_returns(
        RESULTS / "interest_evolution_100k", "slateq")
    assert sorted(long) == sorted(short) == list(range(10))
    main([str(RESULTS / "interest_evolution"), str(RESULTS / "interest_evolution_100k"), "--agent", "slateq"])
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    low = float(summary.split("[")[1].split(",")[0])
    assert low > 0, summary  # 400k steps better than 100k, paired over 10 seeds
    assert min(long.values()) >= 250


def test_an_unknown_agent_is_named() -> None:
    with pytest.raises(SystemExit, match="no evaluations of agent 'nope'"):
        main([str(RESULTS / "interest_evolution"), str(RESULTS / "interest_evolution_100k"),
              "--agent", "nope"])
