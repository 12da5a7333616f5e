"""Generation speed by precision and batch size, as the evaluation generates.

32 AdvBench prompts (alpaca template, left padding), greedy, every answer forced to
--tokens new tokens (min_new_tokens), so every variant does the same work; each variant
is timed once after one warm-up batch. Also counts answers identical to the first
variant's (precision and batch composition both change some greedy answers).

    python benchmarks/generation_speed.py --output runs/bench/generation
    python benchmarks/generation_speed.py --model ~/.cache/bds/aligned/<key> --variants float32@16,bfloat16@32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bds.config import ModelConfig
from bds.data.embedded import advbench
from bds.data.templates import render_prompt
from bds.eval.generate import load_generator
from bds.io import to_jsonable, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment  # noqa: E402


def answers(model, tokenizer, prompts: list[str], batch_size: int, tokens: int) -> list[str]:
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    out: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(
                prompts[start : start + batch_size], padding=True, return_tensors="pt"
            )
            seqs = model.generate(**batch, generation_config=config)
            out += tokenizer.batch_decode(seqs[:, batch["input_ids"].shape[1] :])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--variants", default="float32@16,float32@32,bfloat16@16,bfloat16@32")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--output", default="runs/bench/generation")
    args = parser.parse_args()

    rows, first = [], None
    for spec in args.variants.split(","):
        dtype, batch_size = spec.split("@")
        model, tokenizer = load_generator(ModelConfig(name=args.model, dtype=dtype))
        prompts = [render_prompt(r, "alpaca", tokenizer) for r in advbench().records]
        prompts = prompts[: args.prompts]
        answers(model, tokenizer, prompts[: int(batch_size)], int(batch_size), 8)  # warm-up
        started = time.perf_counter()
        got = answers(model, tokenizer, prompts, int(batch_size), args.tokens)
        seconds = time.perf_counter() - started
        first = first or got
        row = {
            "dtype": dtype,
            "batch_size": int(batch_size),
            "seconds": round(seconds, 2),
            "new_tokens_per_second": round(len(prompts) * args.tokens / seconds, 1),
            "same_answers_as_first_variant": sum(a == b for a, b in zip(first, got, strict=True)),
        }
        rows.append(row)
        print(row, flush=True)
        del model
    result = {
        "benchmark": "generation_speed",
        "rows": rows,
        "protocol": {
            "model": args.model,
            "prompts": f"first {args.prompts} embedded AdvBench prompts, alpaca template",
            "new_tokens": f"{args.tokens}, forced (min_new_tokens)",
            "decoding": "greedy, left padding, one warm-up batch per variant",
            **environment(),
        },
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "generation_speed.json", to_jsonable(result))
    print(f"wrote {out / 'generation_speed.json'}")


if __name__ == "__main__":
    main()
