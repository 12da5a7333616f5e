"""RepNoise: the noise MMD and the damped ascent on harmful answers, beside the alignment CE."""

import pytest
import torch
from trainer_setup import align_beside_sft, same_weights, write_harmful_pool

from bds.defenses.repnoise import ascent_term, mmd, noise_mmd


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_the_gap():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    same, near, far = mmd(a, b), mmd(a + 0.5, b), mmd(a + 3.0, b)
    # the (biased) estimator of the official code: small, not zero, for one distribution
    assert 0 < float(same) < 0.1 and float(same) < float(near) < float(far)
    assert float(mmd(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_noise_mmd_reads_only_answer_positions_and_falls_as_states_become_noise():
    mask = torch.tensor([[False, True, True], [False, False, True]])
    h = 5 + torch.randn(2, 3, 8)
    other = h.clone()
    other[~mask] = 1e3  # prompt positions: ignored
    torch.manual_seed(1)
    first = noise_mmd([h], mask)
    torch.manual_seed(1)
    assert torch.equal(noise_mmd([other], mask), first)
    h = 5 + torch.randn(8, 6, 8)
    mask = torch.ones(8, 6, dtype=torch.bool)
    torch.manual_seed(2)
    offset = noise_mmd([h], mask)
    torch.manual_seed(2)
    noisy = noise_mmd([h - 5], mask)  # already Gaussian: closer to the noise
    assert float(noisy) < float(offset)


def test_the_ascent_term_is_log_one_plus_the_mean_ce():
    losses = [torch.tensor(1.0), torch.tensor(3.0)]
    assert float(ascent_term(losses)) == pytest.approx(torch.log(torch.tensor(3.0)).item())


@pytest.fixture
def pool(tmp_path):
    return write_harmful_pool(tmp_path, "Sure: hit run burn car")


def test_zero_weights_are_sft_and_the_ascent_raises_the_harmful_loss(tmp_path, pool):
    rep = {"name": "repnoise", "harmful": pool, "harmful_batch_size": 4}
    runs = align_beside_sft(
        tmp_path,
        {"zero": {**rep, "alpha": 0.0, "beta": 0.0}, "on": {**rep, "beta": 1.0}},
        max_steps=6,
        log_steps=1,
    )
    (base, _), (same, zero_log), (_, log) = runs["sft"], runs["zero"], runs["on"]
    assert same_weights(base, same)
    # with the ascent on, the harmful answers' loss climbs; without it, it falls
    assert log[-1]["ascent"] > log[0]["ascent"] and zero_log[-1]["ascent"] < zero_log[0]["ascent"]
    # the MMD term pulls the harmful answers' MLP outputs toward noise (same noise draws)
    assert all(a["noise_mmd"] < b["noise_mmd"] for a, b in zip(log[1:], zero_log[1:], strict=True))
    for line in log:  # the logged loss is the three terms together
        expected = line["loss_user"] + line["noise_mmd"] - line["ascent"]
        assert line["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
