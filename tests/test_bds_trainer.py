import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainer_setup import make_config, make_data, make_model_and_tokenizer

from bds.training.outputs import read_weights_table
from bds.training.trainer import train

HERE = Path(__file__).resolve().parent
SOURCES = ("benign", "harmful")


def run(tmp_path, name="run", **train_kw):
    model, tok = make_model_and_tokenizer()
    return train(
        make_config(**train_kw),
        tmp_path / name,
        model=model,
        tokenizer=tok,
        data=make_data(),
        progress=False,
    )


def test_bds_finds_the_harmful_samples(tmp_path):
    result = run(tmp_path, epochs=15)
    w = result.summary["weights"]
    assert w["auroc_benign_vs_harmful"] >= 0.95
    assert w["mean_weight"]["harmful"] < 0.5 < 1.0 < w["mean_weight"]["benign"]


def test_outputs_of_a_run(tmp_path):
    result = run(tmp_path, epochs=2)
    out = result.output_dir
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 8
    rows = read_weights_table(out / "weights.csv")
    assert len(rows) == 100 and {r["source"] for r in rows} == {"benign", "harmful"}
    assert rows[0]["id"].startswith(("benign/", "harmful/"))
    steps = result.summary["steps"]
    assert steps == 20  # 2 epochs * 100 samples / 10 per batch
    assert f"w@step_{steps}" in rows[0] and "w@step_5" in rows[0]
    assert sum(float(r["weight"]) for r in rows) == pytest.approx(100, rel=1e-4)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [5, 10, 15, 20]
    assert {"loss", "loss_user", "loss_align", "energy", "weight_benign", "weight_harmful"} <= set(
        log[0]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["finetune_harmful"] == 20 and summary["counts"]["alignment"] == 40
    assert summary["config"]["defense"]["name"] == summary["mode"] == "bds"
    assert summary["mixed_precision"] == {
        "setting": "no",
        "used": "no",
        "reason": "set in the config",
    }
    assert "torch" in summary["versions"]
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("mode", ["sft", "mix", "bds-no-align"])
def test_modes(tmp_path, mode):
    result = run(tmp_path, defense=mode, epochs=1)
    log = json.loads((result.output_dir / "train_log.jsonl").read_text().splitlines()[-1])
    assert ("loss_align" in log) == (mode == "mix")
    assert (result.output_dir / "weights.csv").exists() == (mode == "bds-no-align")
    if mode != "bds-no-align":
        assert "weights" not in result.summary
        assert log["loss"] == pytest.approx(log["loss_user"] + log.get("loss_align", 0), rel=1e-5)


def test_one_pass_and_two_pass_agree(tmp_path):
    a = run(tmp_path, "one", epochs=1, one_pass=True)
    b = run(tmp_path, "two", epochs=1, one_pass=False)
    wa = load_file(a.output_dir / "adapter" / "adapter_model.safetensors")
    wb = load_file(b.output_dir / "adapter" / "adapter_model.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def test_sft_loss_falls(tmp_path):
    result = run(tmp_path, defense="sft", epochs=4)
    log = [
        json.loads(line)
        for line in (result.output_dir / "train_log.jsonl").read_text().splitlines()
    ]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]


@pytest.mark.parametrize(
    "inference,drive,agnostic,warm",
    [
        ("map", "loss", False, False),
        ("sgld", "loss", True, False),
        ("sgld", "conflict", False, False),
        ("map", "loss", False, True),
    ],
)
def test_interrupted_run_resumes_to_the_same_result(tmp_path, inference, drive, agnostic, warm):
    kw = {
        "epochs": 3,
        "scheduler": {"inference": inference},
        "safety_agnostic": agnostic,
        "drive": drive,
    }
    if warm:  # a run started from a previous run's weights resumes as exactly
        kw["warm_start"] = str(run(tmp_path, "first", epochs=1).output_dir)
    straight = run(tmp_path, "straight", **kw)
    model, tok = make_model_and_tokenizer()
    cfg = make_config(**kw)
    part = train(
        cfg,
        tmp_path / "resumed",
        model=model,
        tokenizer=tok,
        data=make_data(),
        until_step=13,
        progress=False,
    )
    assert part.steps == 13 and (tmp_path / "resumed" / "checkpoints" / "step-13").is_dir()
    assert not (tmp_path / "resumed" / "summary.json").exists()
    model, tok = make_model_and_tokenizer()  # a fresh process would start from scratch like this
    resumed = train(
        cfg, tmp_path / "resumed", model=model, tokenizer=tok, data=make_data(), progress=False
    )
    assert resumed.summary["resumed_from_step"] == 13
    wa = load_file(straight.output_dir / "adapter" / "adapter_model.safetensors")
    wb = load_file(resumed.output_dir / "adapter" / "adapter_model.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    ta = read_weights_table(straight.output_dir / "weights.csv")
    tb = read_weights_table(resumed.output_dir / "weights.csv")
    assert ta == tb  # weights, logits and the whole trajectory
    la = (straight.output_dir / "train_log.jsonl").read_text().splitlines()
    lb = (resumed.output_dir / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in la] == [json.loads(x)["step"] for x in lb]


@pytest.mark.parametrize("reference_weights", ["scheduler", "uniform"])
def test_safety_agnostic_trains_a_reference_adapter(tmp_path, reference_weights):
    result = run(tmp_path, epochs=2, safety_agnostic=True, reference_weights=reference_weights)
    log = json.loads((result.output_dir / "train_log.jsonl").read_text().splitlines()[-1])
    assert "loss_reference" in log
    saved = load_file(result.output_dir / "adapter" / "adapter_model.safetensors")
    assert not any("reference" in k for k in saved)  # only the delivered adapter is exported


def test_two_processes_hold_the_same_scheduler(tmp_path):
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(HERE / "dist_worker.py"), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = [torch.load(tmp_path / f"scheduler-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(states[0]["logits"], states[1]["logits"])
    assert not torch.equal(states[0]["logits"], torch.full_like(states[0]["logits"], 0.1))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2
    log = [
        json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert log[-1]["loss"] < log[0]["loss"]


def test_runs_with_different_precisions_in_one_process(tmp_path):
    run(tmp_path, "fp32", defense="sft", epochs=1)
    result = run(tmp_path, "bf16", defense="sft", epochs=1, mixed_precision="bf16")
    assert result.summary["steps"] == 10


def _adapter(result):
    return load_file(result.output_dir / "adapter" / "adapter_model.safetensors")


def test_projecting_only_response_positions_trains_the_same_model(tmp_path, monkeypatch):
    from bds.training import trainer

    fast = run(tmp_path, "fast", epochs=1)
    assert fast.summary["vocab_projection"] == "response positions"
    monkeypatch.setattr(trainer._Run, "_head_is_plain", lambda self, model, batch: False)
    every = run(tmp_path, "every", epochs=1)
    assert every.summary["vocab_projection"] == "all"
    a, b = _adapter(fast), _adapter(every)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    wa = read_weights_table(fast.output_dir / "weights.csv")
    wb = read_weights_table(every.output_dir / "weights.csv")
    assert [float(r["weight"]) for r in wa] == pytest.approx(
        [float(r["weight"]) for r in wb], rel=1e-4
    )


def test_a_model_that_rescales_its_logits_projects_every_position(tmp_path):
    model, tok = make_model_and_tokenizer()

    def halve_logits(module, inputs, output):  # as Gemma 2's soft-capping or Cohere's scale
        output.logits = output.logits * 0.5
        return output

    model.register_forward_hook(halve_logits)
    result = train(
        make_config(epochs=1, defense="sft"),
        tmp_path / "run",
        model=model,
        tokenizer=tok,
        data=make_data(),
        progress=False,
    )
    assert result.summary["vocab_projection"] == "all"


def test_eager_attention_trains_the_same_model_in_float32(tmp_path):
    default = run(tmp_path, "sdpa", defense="mix", epochs=1)
    model, tok = make_model_and_tokenizer()
    eager = train(
        make_config(defense="mix", epochs=1, attn_implementation="eager"),
        tmp_path / "eager",
        model=model,
        tokenizer=tok,
        data=make_data(),
        progress=False,
    )
    assert model.config._attn_implementation == "eager"
    a, b = _adapter(default), _adapter(eager)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k


def test_reference_adapter_starts_from_the_delivered_adapters_init(tmp_path):
    """theta_ref shares theta's init, so l_i - l_i(theta_ref) is zero before any step and
    afterwards isolates what the alignment batch changed (not two random starts)."""
    from peft import LoraConfig, get_peft_model

    from bds.defenses.bds import REFERENCE_ADAPTER, _copy_adapter

    model, _ = make_model_and_tokenizer()

    lc = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft = get_peft_model(model, lc)
    peft.add_adapter(REFERENCE_ADAPTER, lc)
    params = dict(peft.named_parameters())
    pairs = [
        (n, n.replace(".default.", f".{REFERENCE_ADAPTER}.")) for n in params if ".default." in n
    ]
    assert pairs and any(not torch.equal(params[a], params[b]) for a, b in pairs)
    _copy_adapter(peft, "default", REFERENCE_ADAPTER)
    assert all(torch.equal(params[a], params[b]) for a, b in pairs)


def test_warm_start_takes_a_previous_runs_weights_from_the_first_step(tmp_path):
    first = run(tmp_path, "first", epochs=3)
    learned = {r["id"]: r for r in read_weights_table(first.output_dir / "weights.csv")}
    second = run(tmp_path, "second", epochs=1, warm_start=str(first.output_dir))
    rows = read_weights_table(second.output_dir / "weights.csv")
    for r in rows:  # step 0: the first run's final weights (4 digits kept), matched by id
        assert float(r["w@step_0"]) == pytest.approx(float(learned[r["id"]]["weight"]), rel=1e-3)
    start = {src: [float(r["w@step_0"]) for r in rows if r["source"] == src] for src in SOURCES}
    mean = {src: sum(v) / len(v) for src, v in start.items()}
    assert mean["harmful"] < 0.9 < 1.0 < mean["benign"]  # weighed before any visit
    # the first step already trains with them: the harmful samples' applied share is lower
    # than in a cold run over the same single epoch
    cold = run(tmp_path, "cold", epochs=1)
    share = lambda r: r.summary["weights"]["training_weight_share"]["harmful"]  # noqa: E731
    assert share(second) < 0.9 * share(cold)


def test_warm_start_needs_rows_for_every_user_sample(tmp_path):
    from bds.errors import BDSInputError

    table = tmp_path / "weights.csv"
    table.write_text("id,source,weight,logit\nbenign/0,benign,1.0,0.1\n")
    with pytest.raises(BDSInputError, match=r"defense.warm_start: 99 of the 100 user samples"):
        run(tmp_path, epochs=1, warm_start=str(table))
    with pytest.raises(BDSInputError, match="does not exist"):
        run(tmp_path, "b", epochs=1, warm_start=str(tmp_path / "nowhere"))


def test_warm_start_is_for_the_scalar_scheduler():
    from bds.errors import ConfigError

    with pytest.raises(ConfigError, match="defense.warm_start: starts the scalar"):
        make_config("bds-neural", warm_start="runs/x")


def test_max_weight_caps_the_weights_the_loss_gets_not_the_posterior(tmp_path, monkeypatch):
    import bds.training.losses as losses

    applied = []
    original = losses.weighted_objective

    def recording(user_losses, weights, *rest):
        applied.append(weights.detach().clone())
        return original(user_losses, weights, *rest)

    monkeypatch.setattr(losses, "weighted_objective", recording)
    capped = run(tmp_path, "capped", epochs=4, max_weight=1.0)
    seen = torch.cat(applied)
    assert seen.max() <= 1.0 and seen.min() < 0.9  # weight taken away, none handed out
    w = capped.summary["weights"]
    assert w["mean_weight"]["benign"] > 1.0  # the posterior itself still sums to N
    applied.clear()
    uncapped = run(tmp_path, "uncapped", epochs=4)
    assert torch.cat(applied).max() > 1.0
    # the harmful samples' share of the applied weight is larger once the benign ones
    # stop receiving what the scheduler takes from them
    share = lambda r: r.summary["weights"]["training_weight_share"]["harmful"]  # noqa: E731
    assert share(uncapped) < share(capped) < 0.2


def test_shuffled_weights_single_no_sample_out(tmp_path):
    """The control for the scheduler's choice: the same weights, in a random order."""
    share = lambda r: r.summary["weights"]["training_weight_share"]["harmful"]  # noqa: E731
    chosen = run(tmp_path, "chosen", epochs=10, max_weight=1.0)
    shuffled = run(tmp_path, "shuffled", epochs=10, max_weight=1.0, shuffle_weights=True)
    # the posterior still singles the harmful samples out; the weights they get do not
    assert shuffled.summary["weights"]["mean_weight"]["harmful"] < 1.0
    # shuffled, the harmful samples (20 of 100) get about their number's share back
    assert share(chosen) < 0.18 < share(shuffled)


def test_max_weight_must_be_positive():
    from bds.errors import ConfigError

    with pytest.raises(ConfigError, match="defense.max_weight: 0.0 must be above 0"):
        make_config(max_weight=0.0)
