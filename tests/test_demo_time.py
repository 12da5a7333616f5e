"""benchmarks/demo_time.py on a stand-in repository whose `bds demo` only prints the
alignment stage's log lines and writes the files a demo leaves."""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import demo_time  # noqa: E402

FAKE_CLI = """
import json, os, sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--output") + 1]); out.mkdir(parents=True)
shipped = (Path(__file__).parent / "shipped" / "aligned" / "asset.json").is_file()
assert not Path(os.environ["BDS_CACHE"]).exists()  # an empty cache
if shipped:
    print("align: using the shipped aligned adapter (key k)", flush=True)
else:
    print("align: the base model answers 140 retain requests (once, then cached)", flush=True)
    time.sleep(0.3)
    print("align: fine-tuning embedded:smollm2-135m-instruct on 140 alignment samples", flush=True)
time.sleep(0.1)
(out / "stage_seconds.json").write_text(json.dumps({"align": 0.5, "attack-sft": 2.0, "eval-aligned": 1.0}))
row = {"headline": {"harmful_score": {"value": 3.0}, "over_refusal": {"value": 20.0}}}
(out / "results.json").write_text(json.dumps({"methods": {"aligned": row}}))
"""


def fake_repo(path: Path) -> Path:
    (path / "src/bds/shipped/aligned").mkdir(parents=True)
    (path / "src/bds/__init__.py").write_text("")
    (path / "src/bds/cli.py").write_text(FAKE_CLI)
    (path / "src/bds/shipped/aligned/asset.json").write_text("{}")
    for cmd in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fake"],
    ):
        subprocess.run(["git", *cmd], cwd=path, check=True)
    return path


def test_demo_time_splits_the_stages_of_each_variant(tmp_path):
    repo = fake_repo(tmp_path / "repo")
    output = tmp_path / "demo_time.json"
    argv = ["--repo", str(repo), "--output", str(output), "--demo-args", "--fast"]
    demo_time.main(argv)
    result = json.loads(output.read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"shipped", "built"}
    assert rows["shipped"]["align_parts"] == {
        "how": "shipped adapter merged",
        "merge_shipped_adapter": 0.5,
    }
    built = rows["built"]["align_parts"]
    assert built["how"] == "built" and 0.2 < built["retain_answers"] < 0.5 + 1e-9
    assert built["alignment_sft_and_merge"] == round(0.5 - built["retain_answers"], 1)
    for row in rows.values():
        assert row["stage_seconds"]["attack-sft"] == 2.0 and row["stages_total_seconds"] == 3.5
        assert row["demo_args"] == ["--fast"] and row["scores"]["aligned"]["over_refusal"] == 20.0
        assert "clone" in row["setup_seconds"] and row["demo_wall_seconds"] > 0
    machine = result["protocol"]["machine"]
    assert machine["cpu_model"] and machine["torch_cpu_capability"]
    # a second call keeps the rows it has and runs nothing
    demo_time.main(argv)
    assert json.loads(output.read_text())["rows"] == result["rows"]


def test_demo_time_refuses_a_python_that_imports_another_bds(tmp_path):
    import pytest

    repo = fake_repo(tmp_path / "repo")
    (tmp_path / "elsewhere/bds").mkdir(parents=True)
    (tmp_path / "elsewhere/bds/__init__.py").write_text("")
    with pytest.raises(SystemExit, match="not from the clone"):
        demo_time.check_imports_clone(
            sys.executable, repo, {"PYTHONPATH": str(tmp_path / "elsewhere")}
        )
