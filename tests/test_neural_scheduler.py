"""The amortized neural scheduler on a tiny random encoder: learning, cost, save/load, transfer."""

import pytest
import torch

from bds.schedulers.config import NeuralSettings, SchedulerConfig
from bds.schedulers.encoder import TextEncoder
from bds.schedulers.neural import NeuralScheduler, load_saved, score_texts
from bds.stats import auroc
from bds.tiny import save_tiny_encoder

BENIGN_WORDS = ["apple", "river", "stone", "cloud", "green", "music", "table", "light"]
HARMFUL_WORDS = ["knife", "poison", "steal", "burn", "attack", "weapon", "hurt", "break"]


def texts_of(kind: str, n: int, offset: int = 0) -> list[str]:
    words = BENIGN_WORDS if kind == "benign" else HARMFUL_WORDS
    lead = "Repeat the words:" if kind == "benign" else "How do I"
    return [f"{lead} {words[(i + offset) % 8]} {words[(i // 8 + offset) % 8]}" for i in range(n)]


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory):
    return save_tiny_encoder(tmp_path_factory.mktemp("encoder"))


def make(encoder_folder, texts, **kw):
    neural = kw.pop("neural", {})
    cfg = SchedulerConfig(
        kind="neural",
        lr=kw.pop("lr", 0.05),
        neural=NeuralSettings(encoder=str(encoder_folder), **neural),
        **kw,
    )
    return NeuralScheduler(texts, cfg)


def fit(sched, labels, steps=60, batch=8, seed=0):
    """Benign samples have loss 1, harmful ones 3 (harmful answers stay hard to fit)."""
    g = torch.Generator().manual_seed(seed)
    losses = torch.tensor([1.0 if lab == "benign" else 3.0 for lab in labels])
    for _ in range(steps):
        index = torch.randperm(sched.n, generator=g)[:batch]
        sched.weights(index)
        sched.update(index, losses[index])


def dataset(n_benign=32, n_harmful=8):
    texts = texts_of("benign", n_benign) + texts_of("harmful", n_harmful)
    return texts, ["benign"] * n_benign + ["harmful"] * n_harmful


@pytest.mark.parametrize(
    "neural",
    [
        {"train": "head"},
        {"train": "full", "encoder_lr": 1e-3},
        {"train": "lora", "encoder_lr": 1e-3},
        {"train": "head", "normalize": "batch"},
    ],
)
def test_weights_move_the_right_way(one_thread, encoder_folder, neural):
    texts, labels = dataset()
    sched = make(encoder_folder, texts, neural=neural)
    assert torch.allclose(sched.all_weights(), torch.ones(len(texts)))  # starts at 1
    fit(sched, labels)
    w = sched.reported_weights()
    benign = [float(x) for x, lab in zip(w, labels, strict=True) if lab == "benign"]
    harmful = [float(x) for x, lab in zip(w, labels, strict=True) if lab == "harmful"]
    assert auroc(benign, harmful) == 1.0
    assert sum(harmful) / len(harmful) < 0.8 < 1.0 < sum(benign) / len(benign)
    assert float(w.sum()) == pytest.approx(len(texts), rel=1e-4)  # softmax * N


def test_sigmoid_transform_learns_too(one_thread, encoder_folder):
    texts, labels = dataset()
    sched = make(encoder_folder, texts, transform="sigmoid", init_logit=0.0)
    fit(sched, labels)
    w = sched.reported_weights()
    assert float(w[:32].min()) > float(w[32:].max())


def test_a_step_costs_batch_encoder_passes(one_thread, encoder_folder):
    texts, labels = dataset(56, 8)  # 64 samples, batches of 8
    losses = torch.ones(64)
    # Encoder trained: exactly the batch, once per step (update reuses the weights' graph).
    sched = make(encoder_folder, texts, neural={"train": "full"})
    for step in range(5):
        index = torch.arange(step * 8, step * 8 + 8)
        before = sched.encoder.calls
        sched.weights(index)
        sched.update(index, losses[index])
        assert sched.encoder.calls - before == 8
    # Frozen encoder: each sample once, then no encoder pass at all.
    sched = make(encoder_folder, texts, neural={"train": "head"})
    for epoch in range(2):
        for step in range(8):
            index = torch.arange(step * 8, step * 8 + 8)
            before = sched.encoder.calls
            sched.weights(index)
            sched.update(index, losses[index])
            assert sched.encoder.calls - before == (8 if epoch == 0 else 0)
    # Scores for the table: a full pass only when asked (refresh_steps or at the end).
    sched = make(encoder_folder, texts, neural={"train": "full", "refresh_steps": 4})
    calls = []
    for step in range(4):
        index = torch.arange(step * 8, step * 8 + 8)
        before = sched.encoder.calls
        sched.weights(index)
        sched.update(index, losses[index])
        calls.append(sched.encoder.calls - before)
    assert calls == [8, 8, 8, 8 + 64]


def test_save_and_load_round_trip(one_thread, encoder_folder, tmp_path):
    texts, labels = dataset()
    for train_mode in ("head", "lora"):
        sched = make(encoder_folder, texts, neural={"train": train_mode, "encoder_lr": 1e-3})
        fit(sched, labels, steps=20)
        sched.refresh()
        folder = sched.save(tmp_path / f"saved-{train_mode}")
        assert (folder / "scheduler.json").is_file() and (folder / "head.safetensors").is_file()
        # a trained encoder travels with the folder; a frozen one is referenced
        assert (folder / "encoder").is_dir() == (train_mode == "lora")
        encoder, head, meta = load_saved(folder)
        assert meta["transform"] == "softmax" and meta["trained_steps"] == 20
        again = score_texts(encoder, head, texts)
        assert torch.allclose(again, sched.all_logits(), atol=1e-5)


def test_a_saved_scheduler_scores_unseen_data(one_thread, encoder_folder, tmp_path):
    texts, labels = dataset()
    sched = make(encoder_folder, texts)
    fit(sched, labels)
    folder = sched.save(tmp_path / "saved")
    encoder, head, _ = load_saved(folder)
    unseen_benign = texts_of("benign", 16, offset=3)
    unseen_harmful = texts_of("harmful", 16, offset=5)
    z = score_texts(encoder, head, unseen_benign + unseen_harmful)
    assert auroc(z[:16].tolist(), z[16:].tolist()) >= 0.9


def test_start_from_a_saved_scheduler_frozen_or_trained(one_thread, encoder_folder, tmp_path):
    texts, labels = dataset()
    sched = make(encoder_folder, texts)
    fit(sched, labels)
    folder = sched.save(tmp_path / "saved")
    frozen = make(encoder_folder, texts, neural={"init_from": str(folder), "frozen": True})
    # the dataset softmax is right from the start: every sample scored once at set-up
    assert torch.allclose(frozen.all_weights(), sched.reported_weights(), atol=1e-4)
    index = torch.arange(8)
    before = frozen.all_weights()
    frozen.weights(index)
    frozen.update(index, torch.full((8,), 5.0))
    assert torch.equal(frozen.all_weights(), before)  # frozen: no update
    further = make(encoder_folder, texts, neural={"init_from": str(folder)})
    further.weights(index)
    further.update(index, torch.full((8,), 5.0))
    further.refresh()
    assert not torch.allclose(further.all_weights(), before)


def test_state_round_trip_continues_identically(one_thread, encoder_folder):
    texts, labels = dataset()
    a = make(encoder_folder, texts, neural={"train": "full", "encoder_lr": 1e-3})
    fit(a, labels, steps=10)
    b = make(encoder_folder, texts, neural={"train": "full", "encoder_lr": 1e-3})
    b.load_state_dict(a.state_dict())
    fit(a, labels, steps=5, seed=1)
    fit(b, labels, steps=5, seed=1)
    assert torch.allclose(a.all_weights(), b.all_weights(), atol=1e-6)


def test_a_sample_twice_in_a_batch_counts_once(one_thread, encoder_folder):
    texts, labels = dataset()
    a = make(encoder_folder, texts, neural={"train": "full", "encoder_lr": 1e-3})
    b = make(encoder_folder, texts, neural={"train": "full", "encoder_lr": 1e-3})
    a.weights(torch.tensor([0, 0, 33]))
    a.update(torch.tensor([0, 0, 33]), torch.tensor([1.0, 1.0, 3.0]))
    b.weights(torch.tensor([0, 33]))
    b.update(torch.tensor([0, 33]), torch.tensor([1.0, 3.0]))
    for (name, pa), (_, pb) in zip(a._named_trainable(), b._named_trainable(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name


def test_a_checkpoint_of_another_scheduler_is_a_clear_error(one_thread, encoder_folder):
    from bds.errors import BDSInputError
    from bds.schedulers.scalar import ScalarScheduler

    texts, _ = dataset()
    neural = make(encoder_folder, texts)
    scalar = ScalarScheduler(len(texts), SchedulerConfig())
    with pytest.raises(BDSInputError, match="another scheduler"):
        neural.load_state_dict(scalar.state_dict())
    with pytest.raises(BDSInputError, match="another scheduler"):
        scalar.load_state_dict(neural.state_dict())
    full = make(encoder_folder, texts, neural={"train": "full"})
    with pytest.raises(BDSInputError, match="another scheduler"):
        full.load_state_dict(neural.state_dict())


def test_unknown_embedded_encoder_is_a_clear_error():
    from bds.errors import BDSInputError

    with pytest.raises(BDSInputError, match="unknown embedded encoder"):
        TextEncoder.load("embedded:nope", 32)


# ------------------------------------------------------------------ in the trainer ------


def neural_run(tmp_path, encoder_folder, name, until_step=None, **neural):
    from trainer_setup import make_config, make_data, make_model_and_tokenizer

    from bds.training.trainer import train

    model, tok = make_model_and_tokenizer()
    cfg = make_config(
        epochs=8,
        scheduler={"kind": "neural", "neural": {"encoder": str(encoder_folder), **neural}},
    )
    return train(
        cfg,
        tmp_path / name,
        model=model,
        tokenizer=tok,
        data=make_data(),
        until_step=until_step,
        progress=False,
    )


def test_trainer_with_the_neural_scheduler_finds_the_harmful_samples(
    one_thread, encoder_folder, tmp_path
):
    result = neural_run(tmp_path, encoder_folder, "run")
    w = result.summary["weights"]
    assert w["auroc_benign_vs_harmful"] >= 0.95
    assert w["mean_weight"]["harmful"] < 0.8 < 1.0 < w["mean_weight"]["benign"]
    encoder, head, meta = load_saved(result.output_dir / "scheduler")
    assert meta["trained_steps"] == result.steps


def test_trainer_resumes_a_neural_run_exactly(one_thread, encoder_folder, tmp_path):
    from bds.training.outputs import read_weights_table

    kw = {"train": "full", "encoder_lr": 1e-3}
    straight = neural_run(tmp_path, encoder_folder, "straight", **kw)
    neural_run(tmp_path, encoder_folder, "resumed", until_step=30, **kw)
    resumed = neural_run(tmp_path, encoder_folder, "resumed", **kw)
    assert resumed.summary["resumed_from_step"] == 30
    ta = read_weights_table(straight.output_dir / "weights.csv")
    tb = read_weights_table(resumed.output_dir / "weights.csv")
    assert ta == tb


# ------------------------------------------------------------------ bds audit -----------


def test_bds_audit_scores_unseen_data(one_thread, encoder_folder, tmp_path, capsys):
    import json

    from test_cli_bad_input import assert_bad_input, run_cli

    texts, labels = dataset()
    sched = make(encoder_folder, texts)
    fit(sched, labels)
    folder = sched.save(tmp_path / "saved")
    unseen = tmp_path / "unseen.jsonl"
    rows = [
        {"id": f"u{i}", "instruction": text.split(" ", 1)[0], "response": text.split(" ", 1)[1]}
        for i, text in enumerate(
            texts_of("benign", 12, offset=2) + texts_of("harmful", 6, offset=1)
        )
    ]
    unseen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    benign = tmp_path / "benign.jsonl"
    harmful = tmp_path / "harmful.jsonl"
    benign.write_text("".join(json.dumps(r) + "\n" for r in rows[:12]))
    harmful.write_text("".join(json.dumps(r) + "\n" for r in rows[12:]))

    out = tmp_path / "audit"
    code, stdout, _ = run_cli(
        capsys, "audit", f"benign={benign}", f"harmful={harmful}", "-s", str(folder), "-o", str(out)
    )
    assert code == 0
    summary = json.loads((out / "audit.json").read_text())
    assert summary["n"] == 18 and summary["count"] == {"benign": 12, "harmful": 6}
    assert summary["auroc_benign_vs_harmful"] >= 0.9
    assert summary["lowest"][0]["source"] == "harmful"
    assert "AUROC, benign vs harmful" in stdout
    table = (out / "weights.csv").read_text().splitlines()
    assert len(table) == 19 and table[0].startswith("id,source,weight,logit")

    # unlabelled data: no AUROC, still a count below the threshold
    code, stdout, _ = run_cli(
        capsys,
        "audit",
        str(unseen),
        "-s",
        str(folder),
        "-o",
        str(out),
        "--threshold",
        "1",
        "--show",
        "6",
    )
    assert code == 0 and "AUROC" not in stdout
    summary = json.loads((out / "audit.json").read_text())
    assert summary["auroc_benign_vs_harmful"] is None and summary["below_threshold"] >= 6
    assert {r["id"] for r in summary["lowest"]} == {f"u{i}" for i in range(12, 18)}

    assert_bad_input(
        run_cli(capsys, "audit", str(unseen), "-s", str(tmp_path)), "not a saved neural scheduler"
    )
    assert_bad_input(
        run_cli(capsys, "audit", "maybe=" + str(unseen), "-s", str(folder)), "label before"
    )
    # the same ids in two arguments: prefixed with the argument's position, nothing dropped
    code, stdout, _ = run_cli(
        capsys, "audit", f"benign={benign}", f"harmful={benign}", "-s", str(folder), "-o", str(out)
    )
    assert code == 0
    ids = [line.split(",")[0] for line in (out / "weights.csv").read_text().splitlines()[1:]]
    assert len(ids) == 24 and ids[0] == "1:u0" and ids[12] == "2:u0"
