"""configs/accelerate/ (DeepSpeed ZeRO-2 / ZeRO-3, FSDP) load as accelerate reads them; the
trainer gives DeepSpeed its per-device batch (it has no dataloader to read it from); the
GPU check script leaves a 'no GPU' record on a CPU machine. Training under these configs
needs GPUs: benchmarks/device_check.py runs it where one is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bds.errors import BDSInputError
from bds.training.distributed import fit_deepspeed_batch, refuse_sharded_parameters

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("name", "kind", "setting"),
    [
        ("deepspeed_zero2", "DEEPSPEED", ("zero_stage", 2)),
        ("deepspeed_zero3", "DEEPSPEED", ("zero_stage", 3)),
        ("fsdp", "FSDP", ("fsdp_use_orig_params", True)),
    ],
)
def test_the_accelerate_configs_load(name, kind, setting):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == kind
    section = config.deepspeed_config if kind == "DEEPSPEED" else config.fsdp_config
    assert section[setting[0]] == setting[1]
    assert not config.use_cpu


def fake_accelerator(deepspeed_config: dict | None, processes: int):
    plugin = (
        None if deepspeed_config is None else SimpleNamespace(deepspeed_config=deepspeed_config)
    )
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=processes)


def test_deepspeed_is_given_the_per_device_batch():
    config = {"train_micro_batch_size_per_gpu": "auto"}
    fit_deepspeed_batch(fake_accelerator(config, 4), batch_size=8)
    assert config["train_micro_batch_size_per_gpu"] == 2  # global 8 over 4 processes
    fixed = {"train_micro_batch_size_per_gpu": 3}
    fit_deepspeed_batch(fake_accelerator(fixed, 4), batch_size=8)
    assert fixed["train_micro_batch_size_per_gpu"] == 3  # the user's DeepSpeed file decides
    fit_deepspeed_batch(fake_accelerator(None, 1), batch_size=8)  # no DeepSpeed: nothing to do


@pytest.mark.parametrize(
    ("deepspeed", "fsdp", "refused"),
    [(None, None, None), (2, None, None), (3, None, "ZeRO-3"), (None, object(), "FSDP")],
)
def test_sharded_parameters_are_refused_until_the_adapter_is_gathered(deepspeed, fsdp, refused):
    plugin = None if deepspeed is None else SimpleNamespace(zero_stage=deepspeed)
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin, fsdp_plugin=fsdp))
    if refused is None:
        refuse_sharded_parameters(accelerator)
        return
    with pytest.raises(BDSInputError, match=refused):
        refuse_sharded_parameters(accelerator)


def test_the_device_check_says_there_is_no_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the device check would run its checks")
    output = tmp_path / "device_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--output", str(output)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(output.read_text())
    assert record["gpu"] is False and record["checks"] == {}
    assert "no CUDA device" in record["note"]
