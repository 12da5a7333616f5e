"""Antidote: after fine-tuning, the adapter weights most important on harmful samples are
zeroed, per row, by |W| * ||X||; ratio 0 changes nothing."""

import dataclasses

import pytest
import torch
from trainer_setup import adapter_weights, make_data, make_model_and_tokenizer, train_tiny

from bds.data.mixer import mix_finetune_set
from bds.data.schema import LoadedSource
from bds.data.tokenize import tokenize_records
from bds.defenses.antidote import prune_mask
from bds.errors import BDSInputError
from bds.tiny import synthetic_conflict_task


def test_the_most_important_coordinates_of_each_row_are_pruned():
    importance = torch.tensor([[5.0, 1.0, 3.0, 9.0, 2.0, 0.0, 4.0, 8.0, 7.0, 6.0],
                               [0.0, 9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])  # fmt: skip
    assert prune_mask(importance, 0.2).nonzero().tolist() == [[0, 3], [0, 7], [1, 1], [1, 9]]
    assert prune_mask(importance, 0.0).sum() == 0
    assert prune_mask(importance, 1.0).all()
    # official rounding: int(cols * (1 - ratio)) kept, so 8 columns at 0.1 lose 1 per row
    assert prune_mask(torch.rand(3, 8), 0.1).sum(dim=1).tolist() == [1, 1, 1]


def _data_with_pool():
    """The tiny task's D_ft (20 harmful of 40) with its harmful source: the pool is the 20
    harmful samples not drawn into D_ft."""
    benign, harmful, safe = synthetic_conflict_task(n_harmful=40)
    mix = mix_finetune_set(benign, harmful, 100, 0.2, seed=0)
    data = make_data()
    sources = {"harmful": LoadedSource("tiny-harmful", harmful)}
    return dataclasses.replace(data, finetune=mix.records, mix=mix, sources=sources)


def _runs(tmp_path):
    data = _data_with_pool()
    runs = {}
    for label, settings in [("sft", "sft"), ("off", {"name": "antidote", "dense_ratio": 0.0}),
                            ("on", {"name": "antidote"})]:  # fmt: skip
        runs[label], _ = train_tiny(tmp_path / label, settings, data=data, max_steps=3)
    return data, runs


def _reference_importance(adapter_dir, records):
    """|W| * ||X|| of every adapter Linear, the inputs taken one sample at a time (as the
    official code does, no padding at all)."""
    from peft import PeftModel

    model, tok = make_model_and_tokenizer()
    peft = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    samples, _ = tokenize_records(records, tok, "alpaca", 64, "truncate")
    linears = {
        f"{n}.weight": m
        for n, m in peft.named_modules()
        if n.endswith((".lora_A.default", ".lora_B.default"))
    }
    sumsq = {k: torch.zeros(m.in_features) for k, m in linears.items()}

    def add(key, inputs):  # returns None: a forward hook's return value replaces the output
        sumsq[key].add_(inputs[0][0].pow(2).sum(0))

    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: add(k, i)) for k, m in linears.items()]
    with torch.no_grad():
        for s in samples:
            peft(input_ids=torch.tensor([s.input_ids]))
    for h in hooks:
        h.remove()
    return {k.replace(".default", ""): m.weight.abs() * sumsq[k].sqrt() for k, m in linears.items()}


def test_a_tiny_run_prunes_the_harmful_critical_adapter_weights(tmp_path):
    data, runs = _runs(tmp_path)
    sft, off, on = (adapter_weights(runs[k].output_dir / "adapter") for k in ("sft", "off", "on"))
    assert all(torch.equal(sft[k], off[k]) for k in sft)  # ratio 0: a no-op
    summary = runs["on"].summary["defense"]
    pool_ids = {r.id for r in data.sources["harmful"].records} - {r.id for r in data.finetune}
    assert summary["harmful_pool"]["size"] == len(pool_ids) == 20
    assert summary["calibration_samples"] == 20  # all of them: the pool is < samples (2000)
    pool = [r for r in data.sources["harmful"].records if r.id in pool_ids]
    importance = _reference_importance(runs["sft"].output_dir / "adapter", pool)
    pruned = 0
    for key, trained in sft.items():
        cut = on[key] != trained
        assert torch.all(on[key][cut] == 0)  # changed coordinates are zeroed, nothing else
        cols = trained.shape[1]
        assert cut.sum(dim=1).tolist() == [cols - int(cols * 0.9)] * trained.shape[0]
        score = importance[key]
        lowest_cut = torch.where(cut, score, torch.inf).min(dim=1).values
        highest_kept = torch.where(cut, -torch.inf, score).max(dim=1).values
        assert torch.all(lowest_cut >= highest_kept * (1 - 1e-4))  # the top of each row
        pruned += int(cut.sum())
    assert summary["pruned_weights"] == pruned > 0


def test_a_pool_left_empty_by_the_attack_is_an_error(tmp_path):
    data = _data_with_pool()
    in_ft = [r for r in data.finetune if r.source == "harmful"]
    data = dataclasses.replace(data, sources={"harmful": LoadedSource("tiny", in_ft)})
    with pytest.raises(BDSInputError, match="no harmful sample of data.harmful"):
        train_tiny(tmp_path / "run", "antidote", data=data, max_steps=2)
