"""Vaccine: the alignment loss under a hidden-state perturbation of total size rho."""

import torch
from trainer_setup import align_beside_sft, same_weights

from bds.defenses.vaccine import perturbations


def test_the_perturbation_has_size_rho_over_all_layers_along_each_gradient():
    g = [torch.randn(3, 5, 8), 10 * torch.randn(3, 5, 8), torch.zeros(3, 5, 8)]
    eps = perturbations(g, rho=2.0)
    total = torch.stack([e.norm() for e in eps]).norm()
    assert torch.isclose(total, torch.tensor(2.0), atol=1e-5)
    for e, gl in zip(eps[:2], g[:2], strict=True):  # each layer's share points along g_l
        cos = torch.nn.functional.cosine_similarity(e.flatten(), gl.flatten(), dim=0)
        assert cos > 0.9999
    assert eps[1].norm() > 5 * eps[0].norm()  # one norm for all layers, not one per layer
    assert eps[2].abs().max() == 0


def test_rho_zero_is_sft_and_rho_changes_the_update(tmp_path):
    variants = {"zero": {"name": "vaccine", "rho": 0.0}, "on": {"name": "vaccine", "rho": 0.5}}
    runs = align_beside_sft(tmp_path, variants, max_steps=4, log_steps=1)
    (base, _), (same, _), (moved, log) = runs["sft"], runs["zero"], runs["on"]
    assert same_weights(base, same) and not same_weights(base, moved)
    assert [round(line["perturbation_norm"], 4) for line in log] == [0.5] * 4
    # a step along the loss gradient raises the loss: the perturbed loss is the higher
    assert all(line["loss"] > line["loss_unperturbed"] for line in log)
