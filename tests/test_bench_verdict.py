"""The bench report's verdict on the expected result (bds/bench/verdict.py): BDS lowest in
HS among the defenses whose FA is within a point of SFT's, read off synthetic statistics."""

from __future__ import annotations

import pytest

from bds.bench.report import markdown
from bds.bench.verdict import verdicts


def _stat(mean: float, low: float | None = None, high: float | None = None) -> dict:
    return {"mean": mean, "low": mean - 1 if low is None else low,
            "high": mean + 1 if high is None else high}  # fmt: skip


def _row(defense, hs, fa, hs_vs_bds=None, fa_vs_sft=None, seeds=5, task="sentiment", p=0.2):
    metrics = {"harmful_score": {"mean": _stat(hs), "vs": {}}}
    if hs_vs_bds is not None:
        metrics["harmful_score"]["vs"]["bds"] = _stat(*hs_vs_bds)
    if fa is not None:
        metrics["finetune_accuracy"] = {"mean": _stat(fa), "vs": {}}
        if fa_vs_sft is not None:
            metrics["finetune_accuracy"]["vs"]["sft"] = _stat(fa_vs_sft)
    return {"split": "test", "task": task, "p": p, "defense": defense,
            "seeds": list(range(seeds)), "metrics": metrics}  # fmt: skip


def _results(*rows) -> dict:
    return {"statistics": list(rows)}


def _group(mix_vs_bds, bds_fa_vs_sft=-0.5, seeds=5):
    return _results(
        _row("sft", 80.0, 75.0, hs_vs_bds=(70.0, 60.0, 80.0), seeds=seeds),
        _row("bds", 10.0, 74.5, fa_vs_sft=bds_fa_vs_sft, seeds=seeds),
        _row("mix", 20.0, 74.5, hs_vs_bds=mix_vs_bds, fa_vs_sft=-0.5, seeds=seeds),
        # the lowest HS, but it gives up 5 points of FA: not a defense that keeps the task
        _row("antidote", 2.0, 70.0, hs_vs_bds=(-8.0, -10.0, -6.0), fa_vs_sft=-5.0, seeds=seeds),
        # below BDS and keeping FA, but it reads the true labels: shown, never ranked
        _row("oracle-filter", 5.0, 75.0, hs_vs_bds=(-5.0, -7.0, -3.0), fa_vs_sft=0.0, seeds=seeds),
    )


@pytest.mark.parametrize(
    ("mix_vs_bds", "expected", "lowest"),
    [
        ((10.0, 5.0, 15.0), "confirmed", "bds"),  # mix above BDS, CI excludes 0
        ((1.0, -2.0, 4.0), "not settled", "bds"),  # level: the CI contains 0
        ((-5.0, -8.0, -2.0), "refuted", "bds"),  # mix below BDS (its mean is synthetic)
    ],
)
def test_the_verdict_follows_the_paired_cis_of_the_eligible_defenses(mix_vs_bds, expected, lowest):
    (found,) = verdicts(_group(mix_vs_bds))
    assert found["verdict"] == expected
    assert found["lowest_hs"] == lowest
    assert found["eligible"] == ["bds", "mix", "sft"]
    assert found["not_eligible"] == ["antidote"]
    assert found["upper_bounds"] == ["oracle-filter HS 5.0 (vs BDS -5.0 [-7.0, -3.0])"]


def test_bds_losing_fa_refutes_and_one_seed_settles_nothing():
    (lost,) = verdicts(_group((10.0, 5.0, 15.0), bds_fa_vs_sft=-3.0))  # CI -4 to -2
    assert lost["verdict"] == "refuted" and "FA is 3.00 points below SFT's" in lost["why"]
    assert lost["not_eligible"] == ["antidote", "bds"]
    (unclear,) = verdicts(_group((10.0, 5.0, 15.0), bds_fa_vs_sft=-1.5))  # CI -2.5 to -0.5
    assert unclear["verdict"] == "not settled" and "not clearly more than 1" in unclear["why"]
    for fa in (-0.5, -3.0):  # confirmed, refuted: with one seed, neither
        (one,) = verdicts(_group((10.0, 5.0, 15.0), bds_fa_vs_sft=fa, seeds=1))
        assert one["verdict"] == "not settled (one seed)" and one["seeds"] == 1


def test_a_defense_on_one_shared_seed_keeps_a_group_open_but_not_from_being_refuted():
    """A grid part-way through: the references on 5 seeds, Lisa on one."""
    lisa = _row("lisa", 60.0, 75.0, hs_vs_bds=(50.0, 45.0, 55.0), fa_vs_sft=0.0, seeds=1)
    (found,) = verdicts(_results(*_group((10.0, 5.0, 15.0))["statistics"], lisa))
    assert found["verdict"] == "not settled" and found["seeds"] == 5
    assert found["why"] == "compared with BDS on one seed so far: lisa"
    # Mix below BDS on five seeds refutes, whatever the one-seed defenses will show
    (found,) = verdicts(_results(*_group((-5.0, -8.0, -2.0))["statistics"], lisa))
    assert found["verdict"] == "refuted" and found["why"].startswith("HS below BDS's: mix")
    # one seed neither ranks a defense that seems to lose FA: its eligibility is open too
    thin_loser = _row("lisa", 5.0, 70.0, hs_vs_bds=(-5.0, -7.0, -3.0), fa_vs_sft=-5.0, seeds=1)
    (found,) = verdicts(_results(*_group((10.0, 5.0, 15.0))["statistics"], thin_loser))
    assert found["verdict"] == "not settled" and "one seed so far: lisa" in found["why"]


def test_a_defense_of_the_grid_not_run_yet_keeps_a_group_open_but_not_from_being_refuted():
    """The grid runs Lisa and the oracle filter; neither has a cell in the group yet. Mix
    above BDS would confirm, but Lisa may yet keep FA and score below BDS: not settled. The
    oracle filter (an upper bound, never ranked) holds nothing open."""
    grid = ["sft", "mix", "bds", "antidote", "lisa", "oracle-filter"]
    rows = [r for r in _group((10.0, 5.0, 15.0))["statistics"] if r["defense"] != "oracle-filter"]
    (found,) = verdicts({"statistics": rows, "defenses": grid})
    assert found["verdict"] == "not settled"
    assert found["why"] == "not run yet (1 of the grid's defenses): lisa"
    (found,) = verdicts({"statistics": rows, "defenses": grid[:4] + ["oracle-filter"]})
    assert found["verdict"] == "confirmed"  # every defense of the grid but the bound ran
    # a finished defense below BDS refutes, whatever the ones not run yet will show
    lower = [r for r in _group((-5.0, -8.0, -2.0))["statistics"] if r["defense"] != "lisa"]
    (found,) = verdicts({"statistics": lower, "defenses": grid})
    assert found["verdict"] == "refuted"


def test_a_task_without_fa_or_without_bds_gets_no_verdict():
    no_fa = _results(_row("sft", 80.0, None, task="free"), _row("bds", 10.0, None, task="free"))
    no_bds = _results(_row("sft", 80.0, 75.0), _row("mix", 20.0, 74.0, fa_vs_sft=-1.0))
    assert verdicts(no_fa) == [] and verdicts(no_bds) == []


def test_the_report_states_the_verdict():
    results = {
        **_group((10.0, 5.0, 15.0)),
        "grid": "g.yaml", "total_cells": 20, "cells": [], "aligned_model_scores": {},
        "machine": {"cpu_model": "cpu", "torch_cpu_capability": "AVX2", "cpus": 2, "cuda": None},
        "protocol": {"splits": {}, "eval_sets": {}, "grid": {"references": ["sft", "mix", "bds"],
                     "evaluate_on": ["test"]}},
    }  # fmt: skip
    text = markdown(results, [])
    assert "## The expected result" in text
    assert "| test | sentiment | 0.2 | 5 | bds | confirmed |" in text


def test_the_report_projects_the_cells_left_from_measured_cell_times():
    """Two sft cells took 100 s and 300 s, one bds cell 600 s (another, resumed, 60 s of
    its second run: left out): 3 sft and 2 bds cells left take 3 x 200 + 2 x 600 = 1800 s;
    lisa has no finished cell, so it is named, not timed."""
    results = {
        "statistics": [], "grid": "g.yaml", "total_cells": 11, "aligned_model_scores": {},
        "cells": [{"defense": "sft", "seconds": {"attack": 50, "total": 100}, "threads": 2},
                  {"defense": "sft", "seconds": {"attack": 250, "total": 300}, "threads": 1},
                  {"defense": "bds", "seconds": {"attack": 500, "total": 600}},
                  {"defense": "bds", "seconds": {"attack": 5, "total": 60, "resumed": True}}],
        "pending_by_defense": {"sft": 3, "bds": 2, "lisa": 3},
        "machine": {"cpu_model": "cpu", "torch_cpu_capability": "AVX2", "cpus": 2, "cuda": None},
        "protocol": {"splits": {}, "eval_sets": {}, "grid": {"references": ["sft"],
                     "evaluate_on": ["test"]}},
    }  # fmt: skip
    text = markdown(results, [])
    assert "| sft | 2 | 1, 2 | 150 | 200 |" in text and "| bds | 1 | ? | 500 | 600 |" in text
    assert "8 cells left" in text and "the 5 of them" in text and "would take 0.5 h" in text
    assert "N bench workers (`--jobs N`) take about 1/N of it" in text
    assert "no time measured yet for lisa" in text
    assert "Left out of the means: 1 cell(s) resumed after a stop" in text  # its 60 s, too
    # 100 + 300 + 600 + 60 s = 1060 s = 0.29 h spent, the resumed cell's last run included
    assert "The 4 finished cells took 0.3 h of cell time together" in text
    assert "1 resumed cell(s) count only the run that finished them)." in text
