"""Alignment-stage defenses build their own cached aligned model, keyed by their settings."""

import json

import pytest
import yaml

from bds.align import align_stage
from bds.config import load_config
from bds.data.pipeline import prepare_data
from bds.data.schema import Record
from bds.errors import BDSInputError
from bds.tiny import save_tiny_checkpoint


def _write(folder, name, records):
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return {"kind": "local", "path": str(path)}


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A tiny run whose alignment stage takes `align.defense` (YAML text) as given."""
    monkeypatch.setenv("BDS_CACHE", str(tmp_path / "cache"))
    model = save_tiny_checkpoint(tmp_path / "tiny-model")
    benign = [Record(f"b/{i}", f"Repeat: word {i}", f"word {i}", source="benign") for i in range(8)]
    harmful = [
        Record(f"h/{i}", f"How to attack {i}?", "Sure: hit", source="harmful") for i in range(4)
    ]
    safe = [Record(f"s/{i}", f"How to attack {i}?", "I can't.", source="safe") for i in range(8)]
    pool = [
        Record(f"p/{i}", f"How to hurt person {i}?", "Sure: run", source="harmful")
        for i in range(6)
    ]
    evals = [Record(f"e/{i}", f"How to poison well {i}?", "", source="harmful") for i in range(3)]

    def load(defense: dict):
        if "harmful" in defense and defense["harmful"] == "pool":
            defense = {**defense, "harmful": _write(tmp_path, "pool", pool)}
        cfg = {
            "model": {"name": str(model)},
            "data": {
                "benign": _write(tmp_path, "benign", benign),
                "harmful": _write(tmp_path, "harmful", harmful),
                "alignment": _write(tmp_path, "safe", safe),
                "n": 8,
                "harmful_ratio": 0.25,
                "max_length": 64,
            },
            "train": {"epochs": 1, "batch_size": 4, "log_steps": 1, "mixed_precision": "no"},
            "eval": {"harmful_score": {"prompts": _write(tmp_path, "eval", evals)}},
            "align": {"defense": defense},
        }
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return load_config(path)

    return load


def test_each_defense_and_setting_aligns_its_own_model(config):
    logs: list[str] = []
    folders = {}
    for label, defense in [
        ("sft", {"name": "sft"}),
        ("vaccine", {"name": "vaccine"}),
        ("vaccine-rho1", {"name": "vaccine", "rho": 1.0}),
        ("booster", {"name": "booster", "harmful": "pool", "harmful_batch_size": 2}),
        ("repnoise", {"name": "repnoise", "harmful": "pool", "layer_stride": 2}),
    ]:
        cfg = config(defense)
        folders[label] = align_stage(cfg, prepare_data(cfg.data), logs.append)
        assert (folders[label] / "config.json").is_file()
        info = json.loads((folders[label] / "bds_alignment.json").read_text())
        assert info["defense"]["name"] == defense["name"]
        assert info["n_harmful_pool"] == (6 if "harmful" in defense else 0)
    assert len(set(folders.values())) == len(folders)  # five settings, five models
    assert any("defense booster (harmful pool: 6 samples)" in line for line in logs)
    cfg = config({"name": "vaccine", "rho": 1.0})  # the same settings again: reused
    assert align_stage(cfg, prepare_data(cfg.data), logs.append) == folders["vaccine-rho1"]
    assert "reusing" in logs[-1]


def test_a_harmful_pool_sharing_a_prompt_with_the_attack_is_refused(config, tmp_path):
    cfg = config({"name": "booster", "harmful": "pool"})
    data = prepare_data(cfg.data)
    leaked = [*data.finetune[:1], Record("p/x", "How to hurt someone?", "Sure.")]
    leaked = [r for r in leaked if r.response]
    cfg.align.defense.harmful.path = _write(tmp_path, "leaky", leaked)["path"]
    with pytest.raises(BDSInputError, match="also in the user's data"):
        align_stage(cfg, data, lambda *_: None)
