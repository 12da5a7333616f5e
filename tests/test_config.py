from pathlib import Path

import pytest

from bds.config import DataConfig, RunConfig, SourceConfig, from_dict, load_config
from bds.errors import ConfigError

CONFIGS = sorted(  # run configs (bench/ holds grids: tests/test_bench.py checks them;
    # accelerate/ holds accelerate's launch configs: tests/test_distributed_configs.py)
    p
    for p in Path(__file__).resolve().parent.parent.joinpath("configs").rglob("*.yaml")
    if "bench" not in p.parts and "accelerate" not in p.parts
)


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_validate():
    assert len(CONFIGS) >= 5
    for path in CONFIGS:
        cfg = load_config(path)
        assert isinstance(cfg, RunConfig)
        assert cfg.data.benign is not None


def test_demo_config_values():
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml")
    assert cfg.model.name == "embedded:smollm2-135m-instruct"
    assert cfg.data.harmful == SourceConfig(kind="embedded", name="pyrit-harmful")
    assert cfg.data.harmful_ratio == 0.2 and cfg.data.mix == "exact"


def test_paper_config_uses_reference_protocol():
    cfg = load_config(
        Path(__file__).resolve().parent.parent / "configs" / "paper" / "llama2-7b-sst2.yaml"
    )
    assert cfg.model.name == "meta-llama/Llama-2-7b-hf"
    assert (cfg.data.n, cfg.data.harmful_ratio, cfg.data.n_alignment) == (1000, 0.1, 1000)
    assert cfg.data.benign.kind == "hub" and cfg.data.benign.name == "sst2"
    t = cfg.train
    assert (t.lr, t.weight_decay, t.batch_size, t.alignment_batch_size, t.epochs) == (
        1e-5,
        0.1,
        10,
        10,
        20,
    )
    assert (t.lora.r, t.lora.alpha, cfg.defense.scheduler.lr) == (32, 4, 5e-3)
    ev = cfg.eval
    assert ev.judges[0].name == "beaver-dam" and ev.judges[0].max_length == 256
    hs = ev.harmful_score
    assert (hs.prompts.name, hs.prompts.limit, hs.max_new_tokens) == ("beavertails-eval", 1000, 512)
    assert ev.finetune_accuracy.data.name == "sst2"


def test_unknown_key_names_the_key_and_line(tmp_path):
    path = write(
        tmp_path,
        "model:\n  name: x/y\ndata:\n  benign: {kind: embedded, name: sentiment-train}\n  nn: 5\n",
    )
    with pytest.raises(ConfigError, match=r"run\.yaml:5: data\.nn: unknown key"):
        load_config(path)


def test_out_of_range_ratio_names_the_field(tmp_path):
    path = write(
        tmp_path,
        "data:\n  benign: {kind: embedded, name: sentiment-train}\n"
        "  harmful: {kind: embedded, name: pyrit-harmful}\n  harmful_ratio: 1.5\n",
    )
    with pytest.raises(
        ConfigError, match=r"run\.yaml:4: data\.harmful_ratio: must be in \[0, 1\], got 1\.5"
    ):
        load_config(path)


@pytest.mark.parametrize(
    "snippet,match",
    [
        ("  n: many\n", r"data\.n: must be an integer"),
        ("  n: 0\n", r"data\.n: must be >= 1"),
        ("  n: true\n", r"data\.n: must be an integer"),
        ("  mix: random\n", r"data\.mix: must be one of exact, interleave"),
        ("  max_length: 4\n", r"data\.max_length: must be >= 16"),
        ("  template: vicuna\n", r"data\.template: must be one of alpaca, chat"),
    ],
)
def test_bad_values_are_rejected(tmp_path, snippet, match):
    path = write(
        tmp_path,
        "data:\n  benign: {kind: embedded, name: sentiment-train}\n  harmful_ratio: 0\n" + snippet,
    )
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_source_validation(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.benign\.name: unknown embedded source 'nope'"):
        from_dict(
            RunConfig,
            {"data": {"benign": {"kind": "embedded", "name": "nope"}, "harmful_ratio": 0}},
        )
    with pytest.raises(ConfigError, match=r"data\.benign\.path: a local source needs `path`"):
        from_dict(RunConfig, {"data": {"benign": {"kind": "local"}, "harmful_ratio": 0}})
    with pytest.raises(
        ConfigError, match=r"data\.benign\.kind: must be one of embedded, hub, local"
    ):
        from_dict(RunConfig, {"data": {"benign": {"kind": "s3", "name": "x"}, "harmful_ratio": 0}})
    with pytest.raises(ConfigError, match=r"data\.benign\.fields: unknown record field 'question'"):
        from_dict(
            RunConfig,
            {
                "data": {
                    "benign": {"kind": "local", "path": "x.csv", "fields": {"question": "q"}},
                    "harmful_ratio": 0,
                }
            },
        )


def test_ratio_needs_matching_sources():
    with pytest.raises(ConfigError, match=r"x: harmful_ratio: is > 0 but no `harmful` source"):
        from_dict(
            DataConfig, {"benign": {"kind": "embedded", "name": "sentiment-train"}}, source="x"
        )


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"no such config file"):
        load_config(tmp_path / "absent.yaml")
    path = write(tmp_path, "data:\n  n: [1, 2\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:\d+: not valid YAML"):
        load_config(path)
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"top level: must be a mapping"):
        load_config(path)


def test_data_section_is_required_and_model_defaults_to_embedded(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.yaml: data: is required"):
        load_config(write(tmp_path, ""))
    cfg = load_config(
        write(
            tmp_path,
            "data:\n  benign: {kind: embedded, name: sentiment-train}\n  harmful_ratio: 0\n",
        )
    )
    assert cfg.model.name == "embedded:smollm2-135m-instruct"
