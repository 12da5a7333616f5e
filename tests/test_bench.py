"""`bds bench` end to end on the tiny model and local data: a 2-defense x 1 p x 2-seed grid
runs in slices (--limit), resumes without training again, and reports CIs computed from
the per-item outcomes of its evaluations."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import make_records
from test_demo import cli, demo_config, write_jsonl  # noqa: F401 (a fixture)

from bds.data.schema import Record
from bds.stats import paired_bootstrap


@pytest.fixture
def grid(tmp_path, demo_config):  # noqa: F811
    eval_harmful = make_records(6, "harmful", prefix="eval-harmful")
    asks = make_records(4, "benign", prefix="ask")
    tweets = [
        Record(
            f"tw/{i}",
            "Say the label.",
            "positive" if i % 2 else "negative",
            input=f"tweet {i}",
            source="benign",
        )  # fmt: skip
        for i in range(4)
    ]

    def local(name, recs):
        return {"kind": "local", "path": write_jsonl(tmp_path / f"{name}.jsonl", recs)}

    cfg = {
        "base": str(demo_config),
        "defenses": ["sft", "bds"],
        "harmful_ratios": [0.2],
        "seeds": [0, 1],
        "tasks": {"toy": {"overrides": ["eval.batch_size=8"]}},
        "splits": {
            "validation": {"harmful_score": {"source": local("hs", eval_harmful), "take": 2}},
            "test": {
                "harmful_score": {"source": local("hs", eval_harmful), "skip": 2},
                "finetune_accuracy": {"source": {**local("fa", tweets), "label": "benign"}},
                "over_refusal": {"source": local("or", asks)},
                "note": "held out",
            },
        },
        "bootstrap_resamples": 200,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_cell(grid) -> dict:
    """Narrow the grid to its SFT cell at seed 0; its config as written."""
    cfg = yaml.safe_load(grid.read_text())
    cfg.update(defenses=["sft"], seeds=[0])
    grid.write_text(yaml.safe_dump(cfg))
    return cfg


def test_bench_runs_in_slices_resumes_and_reports_cis(
    tmp_path, grid, capsys, monkeypatch, one_thread
):
    out = tmp_path / "bench"
    argv = ["bench", "-c", str(grid), "-o", str(out)]
    assert cli([*argv, "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "4 cells, 0 done, 4 to run now" in listed and "toy/p=0.2/bds/seed=1" in listed
    assert not (out / "results.json").exists()

    assert cli([*argv, "--limit", "1"]) == 0
    first = json.loads((out / "results.json").read_text())
    assert len(first["cells"]) == 1 and first["cells"][0]["defense"] == "sft"  # cheapest
    assert cli(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 4 and results["total_cells"] == 4
    assert results["defenses"] == ["sft", "bds"]  # the grid's, for the verdict's "not run yet"

    # Nothing is trained or evaluated again: every cell and evaluation is found done.
    def refuse(*args, **kwargs):
        raise AssertionError("trained or evaluated again")

    monkeypatch.setattr("bds.training.trainer.train", refuse)
    monkeypatch.setattr("bds.eval.runner.run_eval", refuse)
    capsys.readouterr()
    assert cli(argv) == 0
    assert "4 done, running 0" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["statistics"] == results["statistics"]

    # The CI of BDS - SFT is the paired bootstrap of the per-item outcomes saved by the eval.
    row = next(r for r in results["statistics"] if r["defense"] == "bds")
    assert row["seeds"] == [0, 1] and set(row["metrics"]) == {
        "harmful_score", "finetune_accuracy", "over_refusal"}  # fmt: skip
    outcomes = {}
    for cell in ("sft", "bds"):
        per_seed = []
        for seed in (0, 1):
            record = json.loads((out / f"cells/toy/p=0.2/{cell}/seed={seed}/cell.json").read_text())
            evaluation = json.loads(
                (tmp_path / record["evals"]["test"] / "results.json").read_text()
            )
            rows = evaluation["generations"]["harmful_score"]
            per_seed.append([100.0 * r["verdicts"]["keyword"]["harmful"] for r in rows])
        outcomes[cell] = per_seed
    assert len(outcomes["bds"][0]) == 4  # the test split: 6 prompts less the 2 of validation
    expected = paired_bootstrap(outcomes["bds"], outcomes["sft"], resamples=200)
    assert row["metrics"]["harmful_score"]["vs"]["sft"] == expected
    assert "bds" not in row["metrics"]["harmful_score"]["vs"]
    assert results["protocol"]["splits"]["test"]["note"] == "held out"
    assert results["machine"]["cpu_model"] and results["machine"]["torch_cpu_capability"]
    assert "toy" in results["aligned_model_scores"]

    # results.json alone restores the finished cells into a new folder (the old one lost):
    # nothing runs again and the statistics read the same.
    saved = tmp_path / "kept-results.json"
    saved.write_text((out / "results.json").read_text())
    again = tmp_path / "bench-again"
    assert cli(["bench", "-c", str(grid), "-o", str(again), "--restore", str(saved)]) == 0
    printed = capsys.readouterr().out
    assert "restore: 4 finished cells" in printed and "4 done, running 0" in printed
    restored = json.loads((again / "results.json").read_text())
    assert restored["statistics"] == results["statistics"]
    assert [c["scores"] for c in restored["cells"]] == [c["scores"] for c in results["cells"]]
    assert all(c["restored_from"] == str(saved) for c in restored["cells"])
    # the aligned model is not rebuilt (no cell needs it) but its "no attack" scores stay
    assert not (again / "aligned.json").exists()
    assert restored["aligned_model_scores"] == results["aligned_model_scores"]
    assert "4 cells restored from" in (again / "report.md").read_text()
    # one cell as if it had attacked an aligned model rebuilt elsewhere: the report says so
    path = again / "cells/toy/p=0.2/bds/seed=1/cell.json"
    record = json.loads(path.read_text())
    assert record["aligned_model_files"] == results["cells"][0]["aligned_model_files"]
    path.write_text(json.dumps({**record, "aligned_model_files": "0123456789abcdef"}))
    assert cli(["bench", "-c", str(grid), "-o", str(again)]) == 0
    assert "`toy` attacked 2 builds of it" in (again / "report.md").read_text()
    assert cli(["bench", "-c", str(grid), "-o", str(again), "--restore", str(saved)]) == 0
    assert "not restored: 4 finished here already" in capsys.readouterr().out
    # a grid changed since: its changed cells are not the results' cells, and run again
    changed = yaml.safe_load(grid.read_text())
    changed["defense_settings"] = {"bds": {"conflict_window": "step"}}
    grid.write_text(yaml.safe_dump(changed))
    third = ["bench", "-c", str(grid), "-o", str(tmp_path / "b3"), "--restore", str(saved)]
    assert cli([*third, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "restore: 2 finished cells" in printed and "2 run with other settings" in printed
    assert "4 cells, 2 done, 2 to run now" in printed

    report = (out / "report.md").read_text()
    assert "test split, task toy, p = 0.2" in report and "| bds | sft | +" in report
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("<!doctype html>", "")
    plots = ("hs_vs_fa-toy.png", "hs_vs_over_refusal-toy.png", "hs_vs_p-toy.png",
             "over_refusal-toy.png")  # fmt: skip
    for name in plots:
        assert (out / "plots" / name).stat().st_size > 1000


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"colour": "red"}, "colour: unknown key; known keys here: base"),
        ({"defenses": ["sft", "vacine"]}, "defenses: unknown defense 'vacine'; choose from"),
        ({"defense_settings": {"vaccine": {"roh": 1}}}, "defense_settings.vaccine: roh: unknown"),
        ({"cost": {"alignment_step_factors": {"lisa": 2}}}, "'lisa' is no alignment-stage"),
        ({"harmful_ratios": [1.5]}, "harmful_ratios: must be in [0, 1]"),
        (
            {"evaluate_on": ["validation", "test"], "splits": {"test": {}}},
            "validation split is not",
        ),
        ({"tasks": {"toy": {"overrides": ["train.lr=fast"]}}}, "task toy: override train.lr=fast"),
    ],
)
def test_bad_grid_configs_exit_2_with_one_sentence(tmp_path, grid, capsys, change, needle):
    cfg = yaml.safe_load(grid.read_text())
    cfg.update(change)
    grid.write_text(yaml.safe_dump(cfg))
    assert cli(["bench", "-c", str(grid), "-o", str(tmp_path / "b"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_overlapping_splits_are_refused(tmp_path, grid, capsys):
    cfg = yaml.safe_load(grid.read_text())
    cfg["splits"]["test"]["harmful_score"]["skip"] = 1  # shares prompt 1 with validation
    grid.write_text(yaml.safe_dump(cfg))
    assert cli(["bench", "-c", str(grid), "-o", str(tmp_path / "b")]) == 2
    assert "share 1 harmful_score prompts" in capsys.readouterr().err


def test_all_defenses_come_from_the_registry(tmp_path, grid, capsys):
    from bds.bench.config import cell_defenses as attack_methods

    cfg = yaml.safe_load(grid.read_text())
    cfg["defenses"] = ["all"]
    grid.write_text(yaml.safe_dump(cfg))
    assert (
        cli(["bench", "-c", str(grid), "-o", str(tmp_path / "b"), "--dry-run", "--limit", "3"]) == 0
    )
    listed = capsys.readouterr().out
    names = attack_methods()
    assert f"{2 * len(names)} cells, 0 done, 3 to run now" in listed
    for name in names:
        assert f"toy/p=0.2/{name}/seed=0" in listed
    assert listed.count("later (--limit/--only)") == 2 * len(names) - 3


def test_only_runs_the_cells_a_pattern_names(tmp_path, grid, capsys):
    argv = ["bench", "-c", str(grid), "-o", str(tmp_path / "b"), "--dry-run"]
    assert cli([*argv, "--only", "toy/p=0.2/*/seed=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "4 cells, 0 done, 2 to run now" in lines[-1]
    state = {line.split()[0]: line.split()[-1] for line in lines if line.startswith("toy/")}
    assert state == {
        "toy/p=0.2/sft/seed=0": "(--limit/--only)",
        "toy/p=0.2/bds/seed=0": "(--limit/--only)",
        "toy/p=0.2/sft/seed=1": "run",
        "toy/p=0.2/bds/seed=1": "run",
    }
    # Two patterns add up; --limit then takes the cheapest of what they name.
    assert cli([*argv, "--only", "*/bds/seed=0", "--only", "*/sft/*", "--limit", "2"]) == 0
    assert "4 cells, 0 done, 2 to run now" in capsys.readouterr().out

    # A pattern that names no cell (here a typo in the defense) is an input error.
    assert cli([*argv, "--only", "toy/p=0.2/bsd/*"]) == 2
    err = capsys.readouterr().err
    assert "--only 'toy/p=0.2/bsd/*' matches none of the 4 cells" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["embedded.yaml", "paper.yaml"])
def test_shipped_grids_load(name):
    from pathlib import Path

    from bds.bench.cells import Grid
    from bds.bench.config import cell_defenses, load_grid
    from bds.defenses.registry import DEFENSES

    path = Path(__file__).resolve().parent.parent / "configs" / "bench" / name
    grid = Grid(load_grid(path), path)
    cfg = grid.cfg
    assert cfg.defense_names() == cell_defenses() and set(cell_defenses()) == set(DEFENSES)
    assert len(grid.cells) == len(cfg.defense_names()) * 3 * len(cfg.tasks) * len(cfg.seeds)
    for task in cfg.tasks:
        test = grid.eval_sets(task, "test")
        assert test["harmful_score"].take is None or test["harmful_score"].take >= 200
        assert test["over_refusal"].take >= 150
    if name == "embedded.yaml":
        assert set(grid.eval_sets("sentiment", "test")) == {
            "harmful_score", "finetune_accuracy", "over_refusal"}  # fmt: skip
        assert grid.eval_sets("sentiment", "test")["finetune_accuracy"].take is None  # all 768


@pytest.mark.parametrize("jobs", [[], ["--jobs", "2"]], ids=["one process", "workers"])
def test_an_interrupted_cell_resumes_without_training_again(
    tmp_path, grid, capsys, monkeypatch, one_thread, jobs
):
    import bds.eval.runner as runner

    one_cell(grid)
    argv = ["bench", "-c", str(grid), "-o", str(tmp_path / "b")]
    real_eval = runner.run_eval

    def stop_at_the_cells_eval(model_cfg, ev, *args, **kwargs):
        if ev.adapter:  # the attacked model's evaluation: interrupted
            raise KeyboardInterrupt
        return real_eval(model_cfg, ev, *args, **kwargs)

    monkeypatch.setattr(runner, "run_eval", stop_at_the_cells_eval)
    assert cli(argv) == 130
    cell = tmp_path / "b" / "cells/toy/p=0.2/sft/seed=0"
    assert (cell / "attack-sft" / "summary.json").is_file() and not (cell / "cell.json").exists()

    def refuse(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(runner, "run_eval", real_eval)
    monkeypatch.setattr("bds.training.trainer.train", refuse)
    assert cli([*argv, *jobs]) == 0
    printed = capsys.readouterr().out
    assert "attack (sft): done before, kept" in printed
    # its time is the second run's only: the record, the line and the report say so
    assert "toy/p=0.2/sft/seed=0 done in" in printed and " s (resumed); ETA 0.0 min" in printed
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["cells"][0]["seed"] == 0 and results["cells"][0]["seconds"]["resumed"] is True
    report = (tmp_path / "b" / "report.md").read_text()
    assert "Left out of the means: 1 cell(s) resumed after a stop" in report


def test_a_cell_stopped_before_its_first_checkpoint_is_not_marked_resumed(
    tmp_path, grid, monkeypatch, one_thread
):
    """Nothing of the stopped run is reused (training starts again from its first step), so
    the finishing run's time is the cell's whole time."""
    import bds.training.trainer as trainer

    one_cell(grid)
    argv = ["bench", "-c", str(grid), "-o", str(tmp_path / "b")]
    real_train = trainer.train

    def stop_at_once(cfg, run_dir, **kwargs):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "run.json").write_text("{}")  # what a run writes before its steps
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", stop_at_once)
    assert cli(argv) == 130
    monkeypatch.setattr(trainer, "train", real_train)
    assert cli(argv) == 0
    record = json.loads((tmp_path / "b/cells/toy/p=0.2/sft/seed=0/cell.json").read_text())
    assert "resumed" not in record["seconds"]


def test_a_split_added_later_is_evaluated_without_training_again(
    tmp_path, grid, capsys, monkeypatch, one_thread
):
    import bds.eval.runner as runner

    cfg = one_cell(grid)
    out = tmp_path / "b"
    argv = ["bench", "-c", str(grid), "-o", str(out)]
    assert cli(argv) == 0
    cell = out / "cells/toy/p=0.2/sft/seed=0/cell.json"
    before = json.loads(cell.read_text())
    assert set(before["evals"]) == {"test"}

    cfg["evaluate_on"] = ["validation", "test"]
    grid.write_text(yaml.safe_dump(cfg))
    evaluated = []
    real_eval = runner.run_eval

    def recording(model_cfg, ev, *args, **kwargs):
        evaluated.append(ev.adapter)
        return real_eval(model_cfg, ev, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(runner, "run_eval", recording)
    monkeypatch.setattr("bds.training.trainer.train", refuse)
    capsys.readouterr()
    assert cli([*argv, "--dry-run"]) == 0
    assert "1 cells, 0 done, 1 to run now" in capsys.readouterr().out
    assert cli(argv) == 0
    after = json.loads(cell.read_text())
    assert after["evals"]["test"] == before["evals"]["test"]  # kept, not run again
    assert set(after["evals"]) == {"validation", "test"}
    # the aligned model and the attacked one, each on the new split only
    assert len(evaluated) == 2 and evaluated[1].endswith("attack-sft/adapter")
    assert after["seconds"]["attack"] == before["seconds"]["attack"]
    splits = {r["split"] for r in json.loads((out / "results.json").read_text())["statistics"]}
    assert splits == {"validation", "test"}


def test_an_alignment_stage_defense_is_a_cell_on_its_own_aligned_model(
    tmp_path, grid, capsys, one_thread
):
    """A Vaccine cell: the provider aligns with Vaccine (the grid's settings for it), the
    user's job is plain SFT on that model; its aligned model is evaluated before the attack,
    and its cells are compared with SFT's like any other defense's."""
    cfg = yaml.safe_load(grid.read_text())
    cfg.update(defenses=["sft", "vaccine"], seeds=[0], references=["sft"],
               defense_settings={"vaccine": {"rho": 0.5}})  # fmt: skip
    grid.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "b"
    argv = ["bench", "-c", str(grid), "-o", str(out)]
    assert cli([*argv, "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "shared: align (toy/vaccine)" in listed and "toy/p=0.2/vaccine/seed=0" in listed
    # a slice's estimate counts only the shared stages its own cells need
    assert cli([*argv, "--dry-run", "--only", "toy/p=0.2/sft/seed=0"]) == 0
    stages = _shared_lines(capsys.readouterr().out)
    assert stages["align (toy/vaccine)"].endswith("later (no cell to run now needs it)")
    assert stages["eval of the aligned model (toy)"].endswith("run (once; less if the aligned model is cached)")  # fmt: skip
    assert cli(argv) == 0
    capsys.readouterr()
    assert cli([*argv, "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert all(line.endswith("done") for line in _shared_lines(listed).values()), listed
    assert "2 cells, 2 done, 0 to run now: estimated 0.0 min + 0.0 min shared stages" in listed

    aligned = json.loads((out / "aligned.json").read_text())
    assert aligned["toy"]["alignment_defense"] == "sft"
    assert aligned["toy/vaccine"]["alignment_defense"] == "vaccine"
    assert aligned["toy"]["model"] != aligned["toy/vaccine"]["model"]
    record = json.loads((out / "cells/toy/p=0.2/vaccine/seed=0/cell.json").read_text())
    assert record["aligned_model"] == aligned["toy/vaccine"]["model"]
    assert record["config"]["align"]["defense"] == {"name": "vaccine", "rho": 0.5}
    assert record["config"]["defense"]["name"] == "sft"
    assert (out / "cells/toy/p=0.2/vaccine/seed=0/attack-sft/adapter").is_dir()

    results = json.loads((out / "results.json").read_text())
    assert set(results["aligned_model_scores"]) == {"toy", "toy/vaccine"}
    row = next(r for r in results["statistics"] if r["defense"] == "vaccine")
    assert "sft" in row["metrics"]["harmful_score"]["vs"]
    assert "- toy/vaccine, test: HS" in (out / "report.md").read_text()


def _shared_lines(listing: str) -> dict[str, str]:
    """A dry run's shared-stage lines by stage name ('align (toy)', ...)."""
    shared = [line[8:] for line in listing.splitlines() if line.startswith("shared: ")]
    return {line.split(")")[0] + ")": line.rstrip() for line in shared}


def test_a_build_shared_by_two_tasks_is_counted_once_and_not_once_built():
    from bds.bench.runner import _shared_seconds

    def stage(key, first, built=False, done=False):
        return {"align": 100.0, "align_key": key, "first": first, "eval": 10.0,
                "built": built, "done": done}  # fmt: skip

    shared = {"a": stage("k", True), "b": stage("k", False), "a/vaccine": stage("v", True)}
    assert _shared_seconds(shared, ["a", "b", "b"]) == 100 + 10 + 10
    assert _shared_seconds(shared, ["b", "a/vaccine"]) == 100 + 10 + 100 + 10
    shared["a"] = stage("k", True, built=True, done=True)  # a's run built k and evaluated it
    assert _shared_seconds(shared, ["a", "b"]) == 10  # b's evaluation only


def test_a_cell_made_before_a_setting_was_added_is_reported(tmp_path, grid, one_thread):
    """A cell whose record lacks a setting added to bds since (left off: null or false) is
    done for the runner, so the report counts it too."""
    one_cell(grid)
    out = tmp_path / "b"
    argv = ["bench", "-c", str(grid), "-o", str(out)]
    assert cli(argv) == 0
    path = out / "cells/toy/p=0.2/sft/seed=0/cell.json"
    record = json.loads(path.read_text())
    assert record["config"]["model"]["revision"] is None
    del record["config"]["model"]["revision"]  # as if `revision` came in a later bds
    record["config_digest"] = "made-earlier"
    path.write_text(json.dumps(record))
    assert cli(argv) == 0
    assert len(json.loads((out / "results.json").read_text())["cells"]) == 1


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "no such file"),
        ("{not json", "not readable as JSON"),
        ('{"format": "something else"}', "not a bench results file"),
    ],
)
def test_restore_from_a_bad_file_exits_2_with_one_sentence(tmp_path, grid, capsys, content, needle):
    source = tmp_path / "results.json"
    if content is not None:
        source.write_text(content)
    argv = ["bench", "-c", str(grid), "-o", str(tmp_path / "b"), "--restore", str(source)]
    assert cli([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"--restore {source}" in err and needle in err


def test_restore_counts_results_kept_without_outcomes(tmp_path, grid, capsys, one_thread):
    """A results.json written before rows kept per-item outcomes restores nothing and says
    so: those cells run again."""
    one_cell(grid)
    out = tmp_path / "b"
    assert cli(["bench", "-c", str(grid), "-o", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    for row in results["cells"]:
        del row["outcomes"]
    old = tmp_path / "old-results.json"
    old.write_text(json.dumps(results))
    argv = ["bench", "-c", str(grid), "-o", str(tmp_path / "b2"), "--restore", str(old)]
    capsys.readouterr()
    assert cli([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "restore: 0 finished cells" in printed and "1 written before results kept" in printed
    assert "1 cells, 0 done, 1 to run now" in printed
