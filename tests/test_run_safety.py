"""Nothing wrong, nothing lost: run identity, one writer per folder, NaN stops, Ctrl-C.

Tiny random models on the synthetic task (seconds each), as in test_bds_trainer.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from trainer_setup import make_config, make_data, make_model_and_tokenizer

from bds.errors import BDSInputError, Interrupted
from bds.lock import LOCK_FILE, folder_lock
from bds.training import trainer as trainer_module
from bds.training.trainer import train


def run(out, until_step=None, **train_kw):
    model, tok = make_model_and_tokenizer()
    return train(
        make_config(**train_kw),
        out,
        model=model,
        tokenizer=tok,
        data=make_data(),
        until_step=until_step,
        progress=False,
    )


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "run"
    run(out, until_step=3, epochs=1)
    assert json.loads((out / "run.json").read_text())["parts"]["config"]["train"]["lr"] == 3e-3
    with pytest.raises(BDSInputError, match=r"train\.lr 0\.003 \(now 0\.3\)"):
        run(out, epochs=1, lr=0.3)
    with pytest.raises(BDSInputError, match=r'defense\.name "bds" \(now "sft"\)'):
        run(out, epochs=1, defense="sft")
    with pytest.raises(BDSInputError, match=r"train\.epochs 1\.0 \(now 2\.0\)"):
        run(out, epochs=2)
    # the log cadence changes no result: resuming with it changed is allowed
    assert run(out, epochs=1, log_steps=2).summary["resumed_from_step"] == 3


def forget_setting(out, section, key):
    """Make `out`'s run.json look written by a bds from before `section.key` existed."""
    path = out / "run.json"
    identity = json.loads(path.read_text())
    del identity["parts"]["config"][section][key]
    identity["key"] = "written-by-an-older-bds"
    path.write_text(json.dumps(identity))


def test_a_setting_added_since_counts_as_the_same_run_while_left_off(tmp_path):
    out = tmp_path / "run"
    run(out, until_step=3, epochs=1)
    forget_setting(out, "defense", "max_weight")
    assert run(out, epochs=1).summary["resumed_from_step"] == 3
    out = tmp_path / "other"
    run(out, until_step=3, epochs=1)
    forget_setting(out, "defense", "max_weight")
    with pytest.raises(BDSInputError, match=r"defense\.max_weight unset \(now 1\.0\)"):
        run(out, epochs=1, max_weight=1.0)


def test_same_config_tolerates_only_added_settings_left_off():
    from bds.run_identity import same_config

    old = {"defense": {"name": "bds", "lr": 1}}
    assert same_config(old, {"defense": {"name": "bds", "lr": 1, "cap": None, "shuffle": False}})
    assert not same_config(old, {"defense": {"name": "bds", "lr": 1, "cap": 1.0}})
    assert not same_config(old, {"defense": {"name": "bds", "lr": 2}})
    assert not same_config({**old, "gone": None}, old)  # a setting removed is a difference


def test_a_rerun_moves_the_finished_outputs_aside_first(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=1)
    assert (out / "summary.json").is_file()
    run(out, until_step=2, epochs=1, save_steps=100)  # a re-run stopped part-way
    assert not (out / "summary.json").exists() and not (out / "adapter").exists()
    assert (out / "previous" / "summary.json").is_file()
    assert (out / "previous" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (out / LOCK_FILE).exists()


def test_a_diverging_run_stops_naming_the_step_and_keeps_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(BDSInputError) as info:
        run(out, epochs=1, lr=1e30, save_steps=1)
    message = str(info.value)
    assert "training stopped at step 2: loss is nan" in message
    assert "step-1" in message
    assert (out / "checkpoints" / "step-1").is_dir()
    assert not (out / "checkpoints" / "step-2").exists()
    for finished in ("summary.json", "adapter", "weights.csv"):
        assert not (out / finished).exists()


def test_ctrl_c_stops_at_the_end_of_a_step_and_resumes(tmp_path, monkeypatch):
    real_step = trainer_module._Run.step

    def step(self, k):
        if k == 2:  # as if the user pressed Ctrl-C during the third step
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, k)

    monkeypatch.setattr(trainer_module._Run, "step", step)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs in the background
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="interrupted at step 3; run the same command to resume"):
        run(out, epochs=1)
    assert (out / "checkpoints" / "step-3").is_dir() and not (out / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back
    monkeypatch.setattr(trainer_module._Run, "step", real_step)
    assert run(out, epochs=1).summary["resumed_from_step"] == 3


def test_a_folder_has_one_writer(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        lock = {"pid": holder.pid, "host": os.uname().nodename, "since": 0}
        (out / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(BDSInputError, match=f"in use by process {holder.pid}"):
            run(out, epochs=1)
        assert not (out / "run.json").exists()  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()
    notes = []
    with folder_lock(out, note=notes.append):  # the holder is gone: its lock is taken over
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert notes and "no longer runs" in notes[0]
    assert not (out / LOCK_FILE).exists()


def test_nan_cannot_hang_any_metric():
    code = (
        "from bds.stats import auroc\n"
        "from bds.training.outputs import weight_summary\n"
        "nan, inf = float('nan'), float('inf')\n"
        "assert auroc([nan], [1.0]) is None and auroc([1.0, nan], [nan]) is None\n"
        "assert auroc([inf], [1.0]) is None and auroc([2.0], [1.0]) == 1.0\n"
        "s = weight_summary(['benign', 'harmful'], [nan, nan])\n"
        "assert s['auroc_benign_vs_harmful'] is None\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
