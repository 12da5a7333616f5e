"""KEY=VALUE overrides of any config field: applied before validation, so they are checked
exactly like the YAML, generic over the dataclass tree, and refused with near matches."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from test_cli_bad_input import assert_bad_input, config_text, run_cli, sources, write_config

from bds.config import RunConfig, from_dict, load_config
from bds.errors import ConfigError, FieldError

__all__ = ["sources"]  # the fixture, used by name below


@pytest.fixture
def cfg_path(tmp_path, sources):
    return write_config(tmp_path, config_text(sources["benign"], sources["harmful"]))


def body(message: str) -> str:
    """A config error without its location (file:line or the override)."""
    return re.sub(r"^(override \S+|\S+:\d+): ", "", message)


# ---------------------------------------------------------------- values ------------------


def test_overrides_set_fields_at_any_depth(cfg_path, tmp_path):
    extra = tmp_path / "extra.jsonl"
    cfg = load_config(
        cfg_path,
        overrides=[
            "train.lr=1e-4",
            "data.harmful_ratio=0.3",
            "train.lora.r=16",
            "train.lora.target_modules=[q_proj, v_proj]",
            "defense.scheduler.neural.encoder_lr=3.0e-4",
            "train.max_steps=null",
            "train.gradient_checkpointing=true",
            "data.benign.fields.instruction=question",
            f"align.retain={{kind: local, path: {extra}}}",
            "eval.judges=[{name: keyword}]",
            "output_dir=runs/x",
        ],
    )
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.data.harmful_ratio == 0.3
    assert (cfg.train.lora.r, cfg.train.lora.target_modules) == (16, ["q_proj", "v_proj"])
    assert cfg.defense.scheduler.neural.encoder_lr == 3e-4
    assert cfg.train.max_steps is None and cfg.train.gradient_checkpointing is True
    assert cfg.data.benign.fields == {"instruction": "question"}
    assert cfg.data.benign.label == "benign"  # the rest of the section is kept
    assert (cfg.align.retain.kind, cfg.align.retain.path) == ("local", str(extra))
    assert [j.name for j in cfg.eval.judges] == ["keyword"]
    assert cfg.output_dir == "runs/x"


def test_defense_settings_are_checked_against_the_named_defense(cfg_path):
    cfg = load_config(cfg_path, overrides=["defense.name=lisa", "defense.rho=2.0"])
    assert (cfg.defense.name, cfg.defense.rho) == ("lisa", 2.0)
    with pytest.raises(ConfigError, match="unknown key defense.rho"):
        load_config(cfg_path, overrides=["defense.name=sft", "defense.rho=2.0"])


def test_a_later_override_wins_and_the_callers_data_is_untouched():
    benign = {"kind": "embedded", "name": "sentiment-train"}
    data = {"data": {"benign": benign, "harmful_ratio": 0, "n": 20}}
    cfg = from_dict(RunConfig, data, overrides=["data.n=5", "data.n=7"])
    assert cfg.data.n == 7
    assert data["data"]["n"] == 20


def test_yaml_files_read_exponent_floats_too(tmp_path, sources):
    text = config_text(sources["benign"], sources["harmful"], extra="train:\n  lr: 1e-4\n")
    assert load_config(write_config(tmp_path, text)).train.lr == 1e-4


# ---------------------------------------------------------------- same checks as the YAML --


@pytest.mark.parametrize(
    "key,value",
    [
        ("train.lr", "-1"),
        ("train.batch_size", "many"),
        ("train.lora.target_modules", "q_proj"),
        ("data.max_length", "8"),
        ("data.template", "fancy"),
    ],
)
def test_an_override_fails_exactly_as_the_same_yaml_value(tmp_path, sources, cfg_path, key, value):
    text = config_text(sources["benign"], sources["harmful"])
    section, *middle, name = key.split(".")
    if section == "data":  # a key of the data section the config already has
        text = text.replace("  n: 10\n", f"  n: 10\n  {name}: {value}\n")
    else:
        nested = "".join(f"{'  ' * i}{m}:\n" for i, m in enumerate(middle, 1))
        text += f"{section}:\n{nested}{'  ' * (len(middle) + 1)}{name}: {value}\n"
    with pytest.raises(ConfigError) as from_yaml:
        load_config(write_config(tmp_path, text, "yaml.yaml"))
    with pytest.raises(ConfigError) as from_override:
        load_config(cfg_path, overrides=[f"{key}={value}"])
    message = str(from_override.value)
    assert message.startswith(f"override {key}={value}: {key}: ")
    assert body(message) == body(str(from_yaml.value))


def test_a_section_check_names_the_override_that_broke_it(cfg_path):
    with pytest.raises(ConfigError) as excinfo:
        load_config(cfg_path, overrides=["data.harmful=null"])
    assert str(excinfo.value).endswith(
        "data.harmful_ratio: is > 0 but no `harmful` source is given "
        "(after override data.harmful=null)"
    )


# ---------------------------------------------------------------- unknown keys, syntax -----


@pytest.mark.parametrize(
    "override,expected",
    [
        ("trian.lr=1", "unknown key trian.lr; did you mean train.lr?"),
        ("train.lrr=1", "unknown key train.lrr; did you mean train.lr or"),
        ("lr=1", "unknown key lr; did you mean"),
        ("train.lr.x=1", "unknown key train.lr.x"),
        (
            "nothing=1",
            "unknown key nothing; the top-level keys are data, model, defense, train, eval",
        ),
    ],
)
def test_unknown_keys_are_refused_with_near_matches(cfg_path, override, expected):
    with pytest.raises(ConfigError) as excinfo:
        load_config(cfg_path, overrides=[override])
    assert f"override {override}: {expected}" in str(excinfo.value)
    if override == "lr=1":
        assert "train.lr" in str(excinfo.value) and "align.lr" in str(excinfo.value)


@pytest.mark.parametrize("override", ["train.lr", "=3", "train.lr=[1,"])
def test_malformed_overrides(cfg_path, override):
    with pytest.raises(ConfigError, match=r"^override "):
        load_config(cfg_path, overrides=[override])


@dataclass
class Vaccine:
    rho: float = 2.0

    def validate(self) -> None:
        if self.rho <= 0:
            raise FieldError("rho", f"must be > 0, got {self.rho}")


@dataclass
class Defense:
    name: str = "bds"
    vaccine: Vaccine | None = None


@dataclass
class Run:
    defense: Defense = field(default_factory=Defense)


def test_overrides_reach_a_section_added_later_without_change():
    """A new section (here a made-up `defense:` tree) is overridable as it is declared."""
    cfg = from_dict(Run, {}, overrides=["defense.name=vaccine", "defense.vaccine.rho=0.5"])
    assert (cfg.defense.name, cfg.defense.vaccine.rho) == ("vaccine", 0.5)
    with pytest.raises(ConfigError, match=r"override defense\.vaccine\.rho=-1: .*must be > 0"):
        from_dict(Run, {}, overrides=["defense.vaccine.rho=-1"])
    with pytest.raises(ConfigError, match="did you mean defense.vaccine.rho"):
        from_dict(Run, {}, overrides=["defense.vaccine.rhoo=1"])


# ---------------------------------------------------------------- the commands -------------


def test_preview_takes_overrides(capsys, cfg_path):
    code, out, err = run_cli(capsys, "data", "preview", str(cfg_path), "--no-tokens", "data.n=5")
    assert code == 0, err
    assert "1 harmful + 4 benign = 5" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("train", "-c", "{cfg}", "-o", "{out}", "train.lrr=1e-4"),
        ("train", "-c", "{cfg}", "--mode", "sft", "-o", "{out}", "train.lrr=1e-4"),
        ("demo", "--config", "{cfg}", "-o", "{out}", "train.lrr=1e-4"),
        ("eval", "--config", "{cfg}", "--output", "{out}", "train.lrr=1e-4"),
    ],
)
def test_commands_refuse_an_unknown_key_before_any_work(capsys, tmp_path, cfg_path, argv):
    out = tmp_path / "out"
    args = [a.format(cfg=cfg_path, out=out) for a in argv]
    assert_bad_input(run_cli(capsys, *args), "override train.lrr=1e-4", "did you mean train.lr")
    assert not out.exists()


def test_eval_without_config_knows_only_model_and_eval(capsys, tmp_path):
    out = tmp_path / "out"
    assert_bad_input(
        run_cli(capsys, "eval", "--output", str(out), "data.n=3"),
        "override data.n=3",
        "the top-level keys are model, eval",
    )
    assert_bad_input(
        run_cli(capsys, "eval", "--output", str(out), "eval.batch_size=0"),
        "override eval.batch_size=0: eval.batch_size: must be >= 1",
    )


def test_train_bad_value_exits_2_naming_the_override(capsys, tmp_path, cfg_path):
    out = tmp_path / "out"
    assert_bad_input(
        run_cli(capsys, "train", "-c", str(cfg_path), "-o", str(out), "train.lr=-1"),
        "override train.lr=-1: train.lr: must be > 0, got -1.0",
    )
