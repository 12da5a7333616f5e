"""LDIFS: the feature-space regulariser holds the MLP outputs near the frozen model's."""

import torch
from trainer_setup import make_data, make_model_and_tokenizer, train_tiny

from bds.data.tokenize import tokenize_records
from bds.defenses.ldifs import MLP_NAME
from bds.training.batching import collate


def _feature_drift(adapter_dir) -> float:
    """sum over layers of ||MLP_l(adapted) - MLP_l(base)||^2 on a fixed batch."""
    from peft import PeftModel

    model, tok = make_model_and_tokenizer()
    peft = PeftModel.from_pretrained(model, str(adapter_dir))
    samples, _ = tokenize_records(make_data().finetune[:16], tok, "alpaca", 64, "truncate")
    batch = collate(samples, tok.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    outs: dict = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: outs.__setitem__(n, o))
        for n, m in peft.named_modules()
        if MLP_NAME.search(n)
    ]
    with torch.no_grad():
        peft(**inputs)
        adapted = dict(outs)
        with peft.disable_adapter():
            peft(**inputs)
    for h in hooks:
        h.remove()
    return sum(float((adapted[n] - outs[n]).pow(2).sum()) for n in adapted)


def test_the_regulariser_keeps_features_near_the_frozen_model(tmp_path):
    drift, logs = {}, {}
    for rho in (0.0, 1.0):
        settings = {"name": "ldifs", "rho": rho, "layer_cap": None}
        result, logs[rho] = train_tiny(tmp_path / f"rho{rho}", settings, max_steps=6, log_steps=1)
        drift[rho] = _feature_drift(result.output_dir / "adapter")
    first = logs[1.0][0]
    assert first["feature_distance"] == 0.0  # LoRA starts as the identity: same features
    assert all(line["feature_distance"] > 0 for line in logs[1.0][1:])
    assert all(line["loss"] >= line["loss_user"] for line in logs[1.0])
    assert drift[1.0] < 0.5 * drift[0.0]


def test_a_layer_term_at_the_cap_is_left_out(tmp_path):
    _, log = train_tiny(tmp_path / "capped", {"name": "ldifs", "rho": 1.0, "layer_cap": 1e-12},
                        max_steps=3, log_steps=1)  # fmt: skip
    n_layers = 2  # the tiny llama's
    assert [line["layers_dropped"] for line in log[1:]] == [n_layers] * 2
    assert all(line["loss"] == line["loss_user"] for line in log[1:])
