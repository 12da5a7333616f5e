"""Booster: alignment loss + lambda * (harmful loss - harmful loss after a harmful step)."""

import json

import pytest
import torch
from trainer_setup import adapter_weights, align_tiny

from bds.data.schema import Record
from bds.defenses.booster import harmful_step_gradients


def test_on_a_quadratic_the_correction_is_the_attenuation_gradient():
    # h(w) = |w|^2 / 2 at w = (3, 4): g = w, w' = w (1 - alpha / 5), g' = w'
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    alpha = 0.1
    g, g_after, h, h_after = harmful_step_gradients(lambda: 0.5 * w.pow(2).sum(), [w], alpha)
    assert torch.equal(w.detach(), torch.tensor([3.0, 4.0]))  # restored exactly
    assert torch.allclose(g[0] - g_after[0], alpha * torch.tensor([0.6, 0.8]))  # alpha w/|w|
    # the harmful step lowers h by alpha |w| - alpha^2 / 2: a positive attenuation
    assert float(h - h_after) == pytest.approx(5 * alpha - alpha**2 / 2, rel=1e-5)
    # g - g' is the gradient of h(w) - h(w - alpha d) with d held fixed: minimising it
    # (descending along +(g - g')) shrinks |w|, where a harmful step gains less
    assert torch.dot(g[0] - g_after[0], w.detach()) > 0


@pytest.fixture
def pool(tmp_path):
    """Harmful (prompt, answer) pairs apart from the tiny task's attack prompts."""
    records = [
        Record(f"pool/{i}", f"How do I hurt person {i}?", "Sure: hit run burn", source="harmful")
        for i in range(12)
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return {"kind": "local", "path": str(path)}


def test_lambda_zero_is_sft_and_lambda_changes_the_update(tmp_path, pool):
    steps = {"max_steps": 4, "log_steps": 1}
    booster = {"name": "booster", "harmful": pool, "harmful_batch_size": 4}
    sft, _ = align_tiny(tmp_path / "sft", {"name": "sft"}, **steps)
    zero, zero_log = align_tiny(tmp_path / "l0", {**booster, "lamb": 0.0}, **steps)
    five, log = align_tiny(tmp_path / "l5", booster, **steps)
    base = adapter_weights(sft.output_dir / "adapter")
    same = adapter_weights(zero.output_dir / "adapter")
    moved = adapter_weights(five.output_dir / "adapter")
    assert all(torch.equal(base[k], same[k]) for k in base)
    assert any(not torch.allclose(base[k], moved[k]) for k in base)
    # a normalised harmful step of 0.1 lowers the harmful loss, and the loss logged is
    # the alignment loss alone
    assert all(line["attenuation"] > 0 for line in zero_log + log)
    assert all(line["loss"] == line["loss_user"] for line in log)
    assert log[0]["harmful_loss"] == zero_log[0]["harmful_loss"]  # same start, same batch
