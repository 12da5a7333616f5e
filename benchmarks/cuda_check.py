"""GPU check of the trainer: CUDA + bf16 correctness on the synthetic task, and step times.

Runs where no hub and no embedded packages are available (a bare GPU machine):
  1. the synthetic conflict task of the tests on a tiny model, fp32 and bf16 on CUDA:
     the AUROC of the weights must stay high;
  2. step time of sft / mix / bds (one pass, two passes) / bds+agnostic with a randomly
     initialised model of SmolLM2-135M's shape on synthetic batches of the demo's lengths.

    python benchmarks/cuda_check.py --output runs/bench/cuda_check.json
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from trainer_setup import make_config, make_data  # noqa: E402

from bds.data.mixer import mix_finetune_set  # noqa: E402
from bds.data.pipeline import PreparedData  # noqa: E402
from bds.data.schema import Record  # noqa: E402
from bds.io import write_json  # noqa: E402
from bds.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402
from bds.training.trainer import train  # noqa: E402

SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                     max_position_embeddings=2048, tie_word_embeddings=True)  # fmt: skip


def words(rng: random.Random, n: int) -> str:
    vocab = ["the", "cat", "sat", "on", "a", "mat", "and", "then", "ran", "far", "away", "home"]
    return " ".join(rng.choice(vocab) for _ in range(n))


def demo_shaped_data(rng: random.Random) -> PreparedData:
    """Lengths like the demo: short benign answers, long harmful ones, mid-length refusals."""
    benign = [Record(f"b/{i}", words(rng, 60), "positive", source="benign") for i in range(200)]
    harmful = [
        Record(f"h/{i}", words(rng, 15), words(rng, 200), source="harmful") for i in range(60)
    ]
    safe = [
        Record(f"s/{i}", words(rng, 15), "I'm sorry, " + words(rng, 60), source="safe")
        for i in range(60)
    ]
    mix = mix_finetune_set(benign, harmful, 100, 0.2, seed=0)
    return PreparedData(mix.records, safe, mix)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="runs/bench/cuda_check.json")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes, to check the script runs"
    )
    args = parser.parse_args()
    out = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    print(out, flush=True)

    quality = {}
    for precision in ("no", "bf16"):
        tok = build_tiny_tokenizer()
        model = build_tiny_model("llama", vocab_size=len(tok), seed=0)
        cfg = make_config(epochs=1 if args.smoke else 15, mixed_precision=precision)
        with tempfile.TemporaryDirectory() as d:
            r = train(cfg, d, model=model, tokenizer=tok, data=make_data(), progress=False)
        quality[precision] = r.summary["weights"]
        print(precision, r.summary["weights"], flush=True)
    out["synthetic_task"] = quality

    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer()
    data = demo_shaped_data(random.Random(0))
    timings = {}
    variants = {
        "sft": {"defense": "sft"},
        "mix": {"defense": "mix"},
        "bds": {"defense": "bds"},
        "bds-two-pass": {"defense": "bds", "one_pass": False},
        "bds-agnostic": {"defense": "bds", "safety_agnostic": True},
    }
    for name, kw in variants.items():
        torch.manual_seed(0)
        shape = (
            {**SMOLLM2_SHAPE, "num_hidden_layers": 1, "vocab_size": 512}
            if args.smoke
            else SMOLLM2_SHAPE
        )
        model = LlamaForCausalLM(
            LlamaConfig(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        )
        cfg = make_config(max_steps=args.steps, batch_size=8, alignment_batch_size=8, mixed_precision="bf16",
                          lora={"target_modules": ["q_proj", "k_proj", "v_proj"]}, **kw)  # fmt: skip
        cfg.data.max_length = 256
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            r = train(cfg, d, model=model, tokenizer=tok, data=data, progress=False)
        timings[name] = {
            "mean_step_seconds": r.summary["mean_step_seconds"],
            "wall": time.perf_counter() - t0,
        }
        print(name, timings[name], flush=True)
    out["step_time_smollm2_shape_bf16"] = timings
    by = {k: v["mean_step_seconds"] for k, v in timings.items()}
    out["ratios"] = {"bds/mix": by["bds"] / by["mix"], "bds/sft": by["bds"] / by["sft"],
                     "one-pass/two-pass": by["bds"] / by["bds-two-pass"]}  # fmt: skip
    print(out["ratios"], flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.output), out)


if __name__ == "__main__":
    main()
