"""The conflict drive: per-sample inner products with the preconditioned alignment gradient,
read from the step's one backward pass, equal the ones computed sample by sample."""

import pytest
import torch
from trainer_setup import ALL_LINEAR, make_config, make_data, make_model_and_tokenizer

from bds.data.tokenize import tokenize_records
from bds.errors import ConfigError
from bds.training.batching import collate
from bds.training.conflict import ConflictDrive, ConflictProbe, adam_preconditioner
from bds.training.losses import per_sample_loss


def _lora_model():
    from peft import LoraConfig, get_peft_model

    model, tok = make_model_and_tokenizer()
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=ALL_LINEAR))
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero in LoRA; make every matrix's gradient non-zero
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return peft, tok


def _losses(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return per_sample_loss(out.logits, batch["labels"])


def test_probe_equals_per_sample_gradients():
    model, tok = _lora_model()
    data = make_data()
    user, _ = tokenize_records(data.finetune[:6], tok, "alpaca", 64)
    align, _ = tokenize_records(data.alignment[:4], tok, "alpaca", 64)
    batch = collate(user + align, tok.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for _ in range(2):  # a second moment to precondition with
        _losses(model, batch).mean().backward()
        opt.step()
        opt.zero_grad()

    weights = torch.tensor([1.5, 0.2, 1.0, 0.7, 2.0, 0.6])
    probe = ConflictProbe(model, horizon=1)  # no averaging: this step's direction only
    probe.start()
    losses = _losses(model, batch)
    (losses[:6] * weights).mean().add(losses[6:].mean()).backward()
    rates = probe.rates(6, weights / 6, opt, lr=1e-3)
    precond = {id(p): adam_preconditioner(opt, p) for p in params}
    probe.remove()

    def grads(scalar):
        return torch.autograd.grad(scalar, params, retain_graph=True)

    losses = _losses(model, batch)
    g_align = grads(losses[6:].mean())
    expected = torch.stack(
        [
            -1e-3
            * sum(
                (gi * precond[id(p)] * ga).sum()
                for gi, ga, p in zip(grads(losses[i]), g_align, params, strict=True)
            )
            for i in range(6)
        ]
    )
    assert torch.allclose(rates, expected, rtol=1e-3, atol=1e-9), (rates, expected)
    assert expected.abs().min() > 0


def test_drive_accumulates_each_rate_over_the_steps_since_the_last_visit():
    drive = ConflictDrive(4)
    assert drive.accumulate(torch.tensor([0, 1]), torch.tensor([0.5, -1.0]), step=2).tolist() == [
        1.5,
        -3.0,
    ]  # first visit at step 2: three steps at the rate seen
    assert drive.accumulate(torch.tensor([0, 3]), torch.tensor([1.0, 2.0]), step=4).tolist() == [
        3.5,
        10.0,
    ]
    restored = ConflictDrive(4)
    restored.load_state_dict(drive.state_dict())
    assert torch.equal(restored.total, drive.total)


@pytest.mark.parametrize("window,auroc", [("step", 0.95), ("epoch", 0.9)])
def test_conflict_drive_separates_the_synthetic_task(tmp_path, window, auroc):
    from bds.training.trainer import train

    model, tok = make_model_and_tokenizer()
    result = train(
        make_config(epochs=8, drive="conflict", conflict_window=window),
        tmp_path / "run",
        model=model,
        tokenizer=tok,
        data=make_data(),
        progress=False,
    )
    w = result.summary["weights"]
    assert result.summary["drive"] == "conflict"
    assert w["auroc_benign_vs_harmful"] >= auroc
    assert w["mean_weight"]["harmful"] < 0.7 < 1.0 < w["mean_weight"]["benign"]
    assert w["training_weight_share"]["harmful"] < 0.2  # its share of D_ft under SFT


@pytest.mark.parametrize(
    "train,message",
    [
        (
            {"defense": "bds-no-align"},
            "defense.drive: conflict measures each sample against the alignment batch; "
            "bds-no-align has no alignment batch",
        ),
        (
            {"safety_agnostic": True},
            "defense.safety_agnostic: True does not apply with drive: conflict",
        ),
        ({"one_pass": False}, "train.one_pass: False does not apply with defense.drive: conflict"),
    ],
)
def test_conflict_drive_needs_the_alignment_batch(train, message):
    with pytest.raises(ConfigError, match=message):
        make_config(drive="conflict", **train)
