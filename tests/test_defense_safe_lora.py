"""Safe LoRA: updates that disagree with the alignment direction are projected onto it."""

import pytest
import torch
from trainer_setup import adapter_weights, make_model_and_tokenizer, train_tiny

from bds.defenses.safe_lora import SafeLoRASettings, alignment_projector, project
from bds.errors import BDSInputError


def _unit(n, i):
    return torch.eye(n)[i]


def _layers():
    """Three 6x4 matrices with the alignment direction V = e0 w^T, and rank-1 updates
    B A whose columns lie along e0 (agrees), e1 (orthogonal) or e0 + e1 (in between)."""
    torch.manual_seed(0)
    w = torch.randn(4)
    a = torch.randn(1, 4)
    layers = []
    for name, column in [("agrees", _unit(6, 0)), ("orthogonal", _unit(6, 1)),
                         ("between", _unit(6, 0) + _unit(6, 1))]:  # fmt: skip
        base = torch.randn(6, 4)
        aligned = base + torch.outer(_unit(6, 0), w)
        layers.append((name, base, aligned, a.clone(), column[:, None].clone()))
    return layers


def test_the_update_along_v_is_kept_and_the_orthogonal_one_projected():
    layers = _layers()
    before = {name: b.clone() for name, *_, b in layers}
    result = {r.name: r for r in project(layers, SafeLoRASettings(select="threshold"))}
    assert result["agrees"].similarity == pytest.approx(1.0)
    assert result["orthogonal"].similarity == pytest.approx(0.0)
    assert result["between"].similarity == pytest.approx(2**-0.5)
    assert [r.projected for r in result.values()] == [False, True, False]
    after = {name: b for name, *_, b in layers}
    assert torch.equal(after["agrees"], before["agrees"])  # untouched, bit for bit
    assert torch.equal(after["between"], before["between"])
    assert torch.count_nonzero(after["orthogonal"]) == 0  # C e1 = 0: the update is gone


def test_threshold_semantics():
    # at or below the threshold is projected; `number` projects the k least similar
    sims = lambda settings: [r.projected for r in project(_layers(), settings)]  # noqa: E731
    assert sims(SafeLoRASettings(select="threshold", threshold=2**-0.5 + 1e-6)) == [
        False, True, True]  # fmt: skip
    assert sims(SafeLoRASettings(select="threshold", threshold=-0.5)) == [False, False, False]
    assert sims(SafeLoRASettings(num_proj_layers=1)) == [False, True, False]
    assert sims(SafeLoRASettings(num_proj_layers=2)) == [False, True, True]
    assert sims(SafeLoRASettings(num_proj_layers=10)) == [True, True, True]  # > matrices: all


def test_projected_update_is_c_times_b():
    name, base, aligned, a, b = _layers()[2]
    trained = b.clone()
    project([(name, base, aligned, a, b)], SafeLoRASettings(select="threshold", threshold=1.0))
    assert torch.allclose(b, alignment_projector(base, aligned) @ trained)


def _aligned_pair(folder):
    """The tiny model saved as the 'base', and an 'aligned' copy whose every linear weight
    moved along a rank-1 direction u_m w_m^T (u_m recorded per module)."""
    base, tok = make_model_and_tokenizer()
    base.save_pretrained(folder)
    aligned, _ = make_model_and_tokenizer()
    directions = {}
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, module in aligned.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
                out, inp = module.weight.shape
                u = torch.randn(out, generator=gen)
                module.weight += 0.5 * torch.outer(u, torch.randn(inp, generator=gen))
                directions[name] = u / u.norm()
    return aligned, tok, directions


def test_a_tiny_run_projects_the_least_similar_updates(tmp_path, monkeypatch):
    import trainer_setup

    aligned, tok, directions = _aligned_pair(tmp_path / "base")
    monkeypatch.setattr(trainer_setup, "make_model_and_tokenizer", lambda: (aligned, tok))
    settings = {"name": "safe-lora", "base_model": str(tmp_path / "base"), "num_proj_layers": 3}
    result, _ = train_tiny(tmp_path / "run", settings, max_steps=4)
    summary = result.summary["defense"]
    assert summary["matrices"] == len(directions) == 14  # 2 layers x 7 linear maps
    assert summary["projected"] == 3
    weights = adapter_weights(result.output_dir / "adapter")
    for name, u in directions.items():
        b = weights[f"base_model.model.{name}.lora_B.weight"]
        along_u = (u[None, :] @ b).norm() / b.norm()  # share of B's columns along u
        if name in summary["projected_matrices"]:
            assert along_u == pytest.approx(1.0, abs=1e-4)  # C has rank 1: B now in span(u)
        else:
            assert along_u < 0.99


def test_without_a_base_model_the_run_stops_before_training(tmp_path):
    with pytest.raises(BDSInputError, match="set defense.base_model"):
        train_tiny(tmp_path / "run", "safe-lora", max_steps=2)
    assert not (tmp_path / "run" / "train_log.jsonl").exists()
