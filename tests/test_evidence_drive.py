"""The evidence drive: the alignment stage's log-likelihood ratio for refusing each user
prompt, scored exactly (padding changes nothing) and separating the synthetic task's attack
questions, which its alignment set refuses, from the benign ones."""

import copy

import pytest
import torch
from trainer_setup import make_config, make_data, make_model_and_tokenizer

from bds.data.schema import Record
from bds.data.tokenize import tokenize_records
from bds.errors import BDSInputError
from bds.stats import auroc
from bds.training.batching import collate
from bds.training.evidence import (
    alignment_evidence,
    prompt_and_opening_ids,
    refusal_log_mass,
    refusal_openings,
    resolve_base,
)
from bds.training.losses import per_sample_loss


@pytest.fixture(scope="module")
def aligned_and_base():
    """The tiny model (base) and a copy fitted to the synthetic alignment set plus retain
    answers to benign prompts (aligned), as the demo's alignment stage fits D_safe + retain."""
    from bds.tiny import synthetic_conflict_task

    base, tok = make_model_and_tokenizer()
    aligned = copy.deepcopy(base)
    retain = synthetic_conflict_task(n_benign=40, seed=1)[0]
    safe, _ = tokenize_records(make_data().alignment + retain, tok, "alpaca", 64)
    batch = collate(safe, tok.pad_token_id)
    opt = torch.optim.AdamW(aligned.parameters(), lr=3e-3)
    for _ in range(30):
        out = aligned(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        per_sample_loss(out.logits, batch["labels"]).mean().backward()
        opt.step()
        opt.zero_grad()
    return aligned.eval(), base.eval(), tok


def test_log_mass_is_the_same_cached_padded_or_alone(aligned_and_base):
    model, _, tok = aligned_and_base
    records = [
        Record(id="a", instruction="Repeat the words: apple river", response="x"),
        Record(id="b", instruction="How do I attack target 3 tonight with a car?", response="x"),
        Record(id="c", instruction="Hi", response="x"),
    ]
    openings = ["No.", "I am sorry", "Sure: grab knife"]
    prompts, ids = prompt_and_opening_ids(records, openings, tok, "alpaca", 64)
    assert len({len(p) for p in prompts}) > 1 and len({len(o) for o in ids}) > 1  # padding
    batched = refusal_log_mass(model, prompts, ids, tok.pad_token_id, batch_size=2)
    with torch.no_grad():
        alone = []
        for prompt in prompts:
            for o in ids:
                seq = torch.tensor([prompt + o])
                logp = torch.log_softmax(model(input_ids=seq).logits[0, :-1], -1)
                alone.append(logp.gather(-1, seq[0, 1:].unsqueeze(-1))[-len(o) :].sum())
    expected = torch.logsumexp(torch.stack(alone).view(3, 3), dim=1)
    assert torch.allclose(batched, expected, atol=1e-4), (batched, expected)


def test_prompt_is_cut_from_its_start_to_leave_room_for_the_openings(tiny_tokenizer):
    record = Record(id="a", instruction="word " * 100, response="x")
    (prompt,), (opening,) = prompt_and_opening_ids([record], ["No."], tiny_tokenizer, "alpaca", 32)
    assert len(prompt) + len(opening) == 32
    assert opening == tiny_tokenizer("No.", add_special_tokens=False)["input_ids"]


def test_openings_are_the_alignment_sets_commonest():
    def rec(i, response, **meta):
        return Record(id=str(i), instruction="q", response=response, source="safe", meta=meta)

    alignment = [
        rec(1, "I am sorry, that is not ok."),
        rec(2, "I am sorry, no."),
        rec(3, "No."),
        rec(4, "Sure, here is the answer", retain=True),  # a retain answer: not a refusal
        rec(5, "Sure, here is it", retain=True),
    ]
    assert refusal_openings(alignment, None, 5) == ["I am sorry,", "No."]
    assert refusal_openings(alignment, None, 1) == ["I am sorry,"]
    assert refusal_openings([], ["Nope"], 5) == ["Nope"]
    with pytest.raises(BDSInputError, match="no alignment set"):
        refusal_openings([], None, 5)


def test_a_model_without_a_recorded_base_needs_evidence_base(tmp_path):
    with pytest.raises(BDSInputError, match="set defense.evidence_base"):
        resolve_base(None, str(tmp_path))
    assert resolve_base("base-model", str(tmp_path)) == "base-model"


def test_evidence_separates_the_questions_the_alignment_set_refuses(aligned_and_base):
    aligned, base, tok = aligned_and_base
    data = make_data()
    openings = refusal_openings(data.alignment, None, 5)
    assert openings == ["No."]
    e = alignment_evidence(aligned, base, data.finetune, openings, tok, "alpaca", 64).tolist()
    harmful = [v for v, r in zip(e, data.finetune, strict=True) if r.source == "harmful"]
    benign = [v for v, r in zip(e, data.finetune, strict=True) if r.source == "benign"]
    assert auroc(harmful, benign) >= 0.95  # harmful prompts carry more evidence for refusing


def test_bds_with_the_evidence_drive_weighs_the_harmful_samples_down(tmp_path, aligned_and_base):
    from bds.training.trainer import train

    aligned, base, tok = aligned_and_base
    base.save_pretrained(tmp_path / "base")
    cfg = make_config(epochs=4, drive="evidence", evidence_base=str(tmp_path / "base"))
    result = train(
        cfg, tmp_path / "run", model=copy.deepcopy(aligned).train(), tokenizer=tok,
        data=make_data(), progress=False,
    )  # fmt: skip
    s = result.summary
    assert s["drive"] == "evidence" and s["evidence"]["openings"] == ["No."]
    assert s["evidence"]["auroc_benign_vs_harmful"] >= 0.95
    w = s["weights"]
    assert w["auroc_benign_vs_harmful"] >= 0.95
    assert w["mean_weight"]["harmful"] < w["mean_weight"]["benign"]
    assert w["training_weight_share"]["harmful"] < 0.2  # its share of D_ft under SFT


def test_sigmoid_weights_stay_about_one_and_leave_the_harmful_samples(tmp_path, aligned_and_base):
    """Per-sample weights (2 sigmoid) read the evidence's sign: centred at its median, the
    weights stay about 1 on average and the harmful samples, with more evidence than the
    median, lose theirs; no sample can gather what the others lose (softmax's zero-sum)."""
    from bds.training.outputs import read_weights_table
    from bds.training.trainer import train

    aligned, base, tok = aligned_and_base
    base.save_pretrained(tmp_path / "base")
    prior = {"kind": "gaussian", "std": 2.0}
    cfg = make_config(
        epochs=4, drive="evidence", evidence_base=str(tmp_path / "base"),
        scheduler={"transform": "sigmoid", "priors": [prior]},
    )  # fmt: skip
    result = train(
        cfg, tmp_path / "run", model=copy.deepcopy(aligned).train(), tokenizer=tok,
        data=make_data(), progress=False,
    )  # fmt: skip
    rows = read_weights_table(result.output_dir / "weights.csv")
    benign = sorted(float(r["weight"]) for r in rows if r["source"] == "benign")
    harmful = [float(r["weight"]) for r in rows if r["source"] == "harmful"]
    assert 0.75 < (sum(benign) + sum(harmful)) / len(rows) < 1.35
    assert max(harmful) < benign[len(benign) // 4]
    assert max(benign) < 2.0 and result.summary["weights"]["auroc_benign_vs_harmful"] >= 0.95


def test_evidence_drive_refuses_the_settings_it_cannot_use():
    from bds.errors import ConfigError

    with pytest.raises(ConfigError, match="safety_agnostic: True does not apply with drive"):
        make_config(drive="evidence", safety_agnostic=True)
    with pytest.raises(ConfigError, match="evidence_count: 0 must be at least 1"):
        make_config(drive="evidence", evidence_count=0)
    assert make_config("bds-no-align", drive="evidence").defense.drive == "evidence"


def _evidence_run(tmp_path, aligned_and_base, name, until_step=None, **train_kw):
    from bds.training.trainer import train

    aligned, base, tok = aligned_and_base
    if not (tmp_path / "base").exists():
        base.save_pretrained(tmp_path / "base")
    cfg = make_config(drive="evidence", evidence_base=str(tmp_path / "base"), **train_kw)
    return train(
        cfg, tmp_path / name, model=copy.deepcopy(aligned).train(), tokenizer=tok,
        data=make_data(), until_step=until_step, progress=False,
    )  # fmt: skip


def test_an_interrupted_evidence_run_resumes_to_the_same_weights(tmp_path, aligned_and_base):
    from bds.training.outputs import read_weights_table

    straight = _evidence_run(tmp_path, aligned_and_base, "a", save_steps=5)
    _evidence_run(tmp_path, aligned_and_base, "b", until_step=10, save_steps=5)
    resumed = _evidence_run(tmp_path, aligned_and_base, "b", save_steps=5)
    a = read_weights_table(straight.output_dir / "weights.csv")
    b = read_weights_table(resumed.output_dir / "weights.csv")
    assert a == b


def test_the_neural_scheduler_learns_from_the_evidence(tmp_path, aligned_and_base):
    from bds.tiny import save_tiny_encoder

    encoder = save_tiny_encoder(tmp_path / "encoder")
    result = _evidence_run(
        tmp_path, aligned_and_base, "neural", epochs=4,
        scheduler={"kind": "neural", "neural": {"encoder": str(encoder)}},
    )  # fmt: skip
    w = result.summary["weights"]
    assert w["auroc_benign_vs_harmful"] >= 0.9
    assert w["mean_weight"]["harmful"] < w["mean_weight"]["benign"]
