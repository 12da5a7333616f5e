"""Booster: alignment loss + lambda * (harmful loss - harmful loss after a harmful step)."""

import pytest
import torch
from trainer_setup import align_beside_sft, same_weights, write_harmful_pool

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
    return write_harmful_pool(tmp_path, "Sure: hit run burn")


def test_lambda_zero_is_sft_and_lambda_changes_the_update(tmp_path, pool):
    booster = {"name": "booster", "harmful": pool, "harmful_batch_size": 4}
    runs = align_beside_sft(
        tmp_path, {"zero": {**booster, "lamb": 0.0}, "five": booster}, max_steps=4, log_steps=1
    )
    (base, _), (same, zero_log), (moved, log) = runs["sft"], runs["zero"], runs["five"]
    assert same_weights(base, same) and not same_weights(base, moved)
    # a normalised harmful step of 0.1 lowers the harmful loss, and the loss logged is
    # the alignment loss alone
    assert all(line["attenuation"] > 0 for line in zero_log + log)
    assert all(line["loss"] == line["loss_user"] for line in log)
    assert log[0]["harmful_loss"] == zero_log[0]["harmful_loss"]  # same start, same batch
