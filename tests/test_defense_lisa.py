"""Lisa: alignment / user states alternate by its step split, and the proximal term pulls
toward the weights at the last switch."""

import pytest
import torch
from trainer_setup import (
    adapter_weights,
    make_config,
    make_data,
    make_model_and_tokenizer,
    train_tiny,
)

from bds.errors import BDSInputError
from bds.training import checkpoint as ckpt
from bds.training.trainer import train

SPLIT = {"name": "lisa", "alignment_steps": 2, "finetune_steps": 3, "proximal_after": 0.0}


def test_the_states_follow_the_step_split(tmp_path):
    _, log = train_tiny(tmp_path / "run", SPLIT, max_steps=10, log_steps=1)
    states = [line["alignment_state"] for line in log]
    assert states == [1, 1, 0, 0, 0, 1, 1, 0, 0, 0]
    for line in log:  # an alignment step reads no user sample, a user step no alignment one
        assert ("loss_align" in line) == bool(line["alignment_state"])
        assert ("loss_user" in line) != bool(line["alignment_state"])
        assert line["loss"] > line["loss_align" if line["alignment_state"] else "loss_user"] or (
            line.get("proximal", 0) == 0
        )


def _distance(a, b):
    return sum(float((a[k] - b[k]).pow(2).sum()) for k in a)


def test_the_user_state_is_pulled_toward_the_last_alignment_weights(tmp_path):
    drift = {}
    for rho in (0.0, 1e4):
        folder, settings = tmp_path / f"rho{rho}", {**SPLIT, "rho": rho}
        train_tiny(folder, settings, max_steps=10, until_step=2)  # the 2 alignment steps
        run, _ = train_tiny(folder, settings, max_steps=10, until_step=5)  # 3 user steps
        aligned = adapter_weights(ckpt.checkpoint_root(folder) / "step-2" / "adapter")
        state, _ = ckpt.load_checkpoint(ckpt.checkpoint_root(folder) / "step-5")
        anchor = state["defense"]["anchor"]  # kept in the checkpoint: the resume is exact
        assert sorted(float(t.norm()) for t in anchor) == sorted(
            float(t.norm()) for t in aligned.values()
        )  # the weights the alignment state ended at
        drift[rho] = _distance(
            adapter_weights(ckpt.checkpoint_root(folder) / "step-5" / "adapter"), aligned
        )
    assert drift[1e4] < 0.5 * drift[0.0]


def test_an_interrupted_lisa_run_resumes_exactly(tmp_path):
    straight, _ = train_tiny(tmp_path / "straight", SPLIT, max_steps=9)
    cfg = make_config(SPLIT, max_steps=9)
    for until in (6, None):  # stops inside a user state, after a switch
        model, tok = make_model_and_tokenizer()
        resumed = train(cfg, tmp_path / "resumed", model=model, tokenizer=tok, data=make_data(),
                        until_step=until, progress=False)  # fmt: skip
    a = adapter_weights(straight.output_dir / "adapter")
    b = adapter_weights(resumed.output_dir / "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_too_short_to_leave_the_first_alignment_state_is_refused(tmp_path):
    settings = {**SPLIT, "alignment_steps": 10, "finetune_steps": 90}
    with pytest.raises(BDSInputError, match="all 10 steps of this run fall in the first"):
        train_tiny(tmp_path / "run", settings, max_steps=10)
    assert not (tmp_path / "run" / "adapter").exists()  # nothing written as if it had trained
