"""Mix: CE(user) + lambda * CE(alignment batch); lambda scales the alignment loss only (BDS's too)."""

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


def test_bds_lambda_zero_trains_as_bds_without_the_alignment_batch(tmp_path):
    runs = {}
    for name, defense in (
        ("no-align", "bds-no-align"),
        ("zero", {"name": "bds", "alignment_weight": 0.0}),
    ):
        result, _ = train_tiny(tmp_path / name, defense, max_steps=4)
        runs[name] = adapter_weights(result.output_dir / "adapter")
    for key in runs["no-align"]:
        assert torch.allclose(runs["zero"][key], runs["no-align"][key], atol=1e-5), key


def test_the_mix_control_of_bds_settings_keeps_their_lambda():
    from bds.defenses.bds import BDSSettings
    from bds.defenses.registry import settings_for

    control = settings_for("mix", BDSSettings(alignment_weight=0.1))
    assert (control.name, control.alignment_weight) == ("mix", 0.1)
    assert settings_for("mix", BDSSettings()).alignment_weight == 1.0
