"""A bench grid that `extends` another: the parent's keys with the child's merged over them
(mappings key by key, lists and values replaced), the parent's run-config paths rebased, and
a problem in an inherited key reported at the parent's file and line."""

from pathlib import Path

import pytest

from bds.bench.config import load_grid
from bds.errors import ConfigError

PARENT = """\
base: ../demo.yaml
defenses: [sft, mix, bds]
defense_settings:
  bds: {drive: evidence}
harmful_ratios: [0.2]
seeds: [0, 1]
tasks:
  toy: {base: ../toy.yaml}
splits:
  test:
    note: held out
evaluate_on: [test]
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_child_grid_merges_over_its_parent_and_rebases_its_paths(tmp_path):
    _write(tmp_path / "bench" / "parent.yaml", PARENT)
    child = _write(
        tmp_path / "bench" / "variants" / "child.yaml",
        "extends: ../parent.yaml\n"
        "defenses: [mix, bds]\n"  # a list replaces the parent's
        "defense_settings:\n  bds: {max_weight: 1.0}\n"  # a mapping merges into the parent's
        "references: [mix]\n",
    )
    cfg = load_grid(child)
    assert cfg.defenses == ["mix", "bds"] and cfg.seeds == [0, 1]
    assert cfg.defense_settings == {"bds": {"drive": "evidence", "max_weight": 1.0}}
    assert cfg.references == ["mix"] and cfg.splits["test"].note == "held out"
    # ../demo.yaml of bench/parent.yaml is ../../demo.yaml from bench/variants/
    assert (child.parent / cfg.base).resolve() == (tmp_path / "demo.yaml").resolve()
    assert (child.parent / cfg.tasks["toy"].base).resolve() == (tmp_path / "toy.yaml").resolve()


def test_grids_chain_and_a_grid_without_extends_is_read_as_it_is(tmp_path):
    parent = _write(tmp_path / "a.yaml", PARENT)
    _write(tmp_path / "b.yaml", "extends: a.yaml\nseeds: [3]\n")
    c = _write(tmp_path / "c.yaml", "extends: b.yaml\nharmful_ratios: [0.1, 0.5]\n")
    cfg = load_grid(c)
    assert cfg.seeds == [3] and cfg.harmful_ratios == [0.1, 0.5] and cfg.defenses[0] == "sft"
    assert load_grid(parent).seeds == [0, 1]


def test_an_inherited_problem_names_the_parent_file_and_line(tmp_path):
    parent = _write(tmp_path / "a.yaml", PARENT.replace("seeds: [0, 1]", "seeds: [0, 0]"))
    child = _write(tmp_path / "b.yaml", "extends: a.yaml\nreferences: [mix]\n")
    with pytest.raises(ConfigError, match=rf"^{parent}:6: seeds: lists a value twice"):
        load_grid(child)
    _write(tmp_path / "b.yaml", "extends: a.yaml\nseeds: [-1]\n")  # the child's own line
    with pytest.raises(ConfigError, match=rf"^{child}:2: seeds: must be in"):
        load_grid(child)


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "a cycle"),
        ({"a.yaml": "extends: a.yaml\n"}, "a cycle"),
        ({"a.yaml": "extends: missing.yaml\n"}, "no grid file"),
        ({"a.yaml": "extends: [b.yaml]\n"}, "name one grid file"),
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "- a list\n"}, "holds no mapping"),
    ],
)
def test_a_bad_extends_is_one_sentence_at_its_line(tmp_path, files, needle):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/[ab].yaml:1: extends: .*{needle}"):
        load_grid(tmp_path / "a.yaml")


def test_the_shipped_variants_equal_their_written_out_form():
    """demo-protocol-evidence-sigmoid-shuffled.yaml extends the sigmoid grid, which extends
    demo-protocol.yaml: the BDS settings add up along the chain."""
    bench = Path(__file__).resolve().parent.parent / "configs" / "bench"
    cfg = load_grid(bench / "demo-protocol-evidence-sigmoid-shuffled.yaml")
    assert cfg.base == "../demo.yaml" and cfg.defenses == ["bds"]
    assert cfg.defense_settings["bds"] == {
        "drive": "evidence",
        "shuffle_weights": True,
        "scheduler": {"transform": "sigmoid", "priors": [{"kind": "gaussian", "std": 2.0}]},
    }
    assert cfg.splits["test"].harmful_score.take == 200  # demo-protocol.yaml's test split
