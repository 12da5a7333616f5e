"""benchmarks/readme_tables.py: the README's comparison tables are generated from the bench
result files they cite, and stay equal to them."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import readme_tables  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_tables_equal_their_result_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_tables.BLOCK.search(text), "the README has no generated table"
    assert readme_tables.render(text) == text, "run python benchmarks/readme_tables.py"


def _stat(mean, low, high, seeds=2):
    return {"mean": mean, "low": low, "high": high, "seeds": seeds, "items": 10}


def _results():
    def row(defense, hs, vs):
        metric = {"mean": _stat(hs, hs - 1, hs + 1), "vs": vs}
        return {"split": "test", "task": "toy", "p": 0.2, "defense": defense, "seeds": [0, 1],
                "metrics": {"harmful_score": metric}}  # fmt: skip

    return {
        "statistics": [
            row("sft", 40.0, {"mix": _stat(30.0, 20.0, 40.0, seeds=1)}),  # mix ran seed 0 only
            row("mix", 10.0, {}),
            row("bds", 9.0, {"mix": _stat(-1.0, -3.0, 1.5)}),
            row("lisa", 30.0, {}),  # no seed in common with mix
        ],
        "aligned_model_scores": {
            "toy": {"test": {"harmful_score": 2.0}},
            "toy/vaccine": {"test": {"harmful_score": 4.0}},
            "other": {"test": {"harmful_score": 9.0}},  # another task's: not in toy's table
        },
        "protocol": {"grid": {"evaluate_on": ["test"]}},
    }


def test_a_marker_is_filled_from_its_file_and_rewritten_when_the_file_changes(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(_results()))
    text = "intro\n<!-- generated: r.json minus mix -->\nold table\n<!-- end generated -->\nend\n"
    out = readme_tables.render(text, root=tmp_path)
    lines = out.splitlines()
    assert lines[0] == "intro" and lines[-1] == "end" and "old table" not in out
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| defense | seeds | HS (%) | ΔHS vs mix |"
    # the reference first, then the others by name; the CI that holds 0 is marked (ns), a
    # difference on fewer seeds than the row's mean says on how many, none is a dash
    assert table[1] == "| --- | --- | --- | --- |" and table[2:] == [
        "| mix | 2 | 10.0 [9.0, 11.0] | – |",
        "| bds | 2 | 9.0 [8.0, 10.0] | -1.0 [-3.0, +1.5] (ns) |",
        "| lisa | 2 | 30.0 [29.0, 31.0] | – |",
        "| sft | 2 | 40.0 [39.0, 41.0] | +30.0 [+20.0, +40.0] (1 seed) |",
        "| aligned model, no attack | – | 2.0 | – |",
        "| aligned model (vaccine), no attack | – | 4.0 | – |",
    ]
    assert readme_tables.render(out, root=tmp_path) == out  # rendering is idempotent

    changed = _results()
    changed["statistics"][2]["metrics"]["harmful_score"]["mean"]["mean"] = 5.0
    (tmp_path / "r.json").write_text(json.dumps(changed))
    assert "| bds | 2 | 5.0 [8.0, 10.0]" in readme_tables.render(out, root=tmp_path)


def test_a_marker_naming_no_result_file_is_one_clear_error(tmp_path):
    text = "<!-- generated: gone.json minus mix -->\n<!-- end generated -->\n"
    with pytest.raises(SystemExit, match="gone.json: no such result file"):
        readme_tables.render(text, root=tmp_path)


def test_a_verdict_marker_holds_the_reports_verdict(tmp_path):
    results = _results()
    for row in results["statistics"]:  # FA level with SFT's for every defense
        vs = {"sft": _stat(0.0, -0.5, 0.5)} if row["defense"] != "sft" else {}
        row["metrics"]["finetune_accuracy"] = {"mean": _stat(75.0, 74.0, 76.0), "vs": vs}
    results["statistics"][0]["metrics"]["harmful_score"]["vs"]["bds"] = _stat(31.0, 25.0, 37.0)
    results["statistics"][1]["metrics"]["harmful_score"]["vs"]["bds"] = _stat(1.0, -1.5, 3.0)
    (tmp_path / "r.json").write_text(json.dumps(results))
    text = "<!-- generated: r.json verdict -->\n<!-- end generated -->\n"
    out = readme_tables.render(text, root=tmp_path)
    assert "| test | toy | 0.2 | 2 | bds | not settled | HS level with BDS's" in out
    assert "mix (+1.0 [-1.5, +3.0])" in out and "sft" not in out.split("level with")[1]
