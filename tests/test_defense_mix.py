"""Mix: CE(user) + lambda * CE(alignment batch); lambda scales the alignment loss only."""

import pytest
import torch
from trainer_setup import adapter_weights, train_tiny


def test_lambda_scales_the_alignment_loss(tmp_path):
    _, log = train_tiny(tmp_path / "quarter", {"name": "mix", "alignment_weight": 0.25},
                        max_steps=3, log_steps=1)  # fmt: skip
    for line in log:
        assert line["loss"] == pytest.approx(line["loss_user"] + 0.25 * line["loss_align"])


def test_lambda_zero_trains_as_sft_and_one_does_not(tmp_path):
    runs = {}
    for name, defense in (
        ("sft", "sft"),
        ("zero", {"name": "mix", "alignment_weight": 0.0}),
        ("one", "mix"),
    ):
        result, _ = train_tiny(tmp_path / name, defense, max_steps=4)
        runs[name] = adapter_weights(result.output_dir / "adapter")
    for key in runs["sft"]:  # the alignment batch rides in the forward but pulls nothing
        assert torch.allclose(runs["zero"][key], runs["sft"][key], atol=1e-5), key
    assert any(not torch.allclose(runs["one"][k], runs["sft"][k], atol=1e-4) for k in runs["sft"])
