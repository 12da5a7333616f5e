"""`train.report_to`: checked when the config loads (known, installed), and the whole
config handed to the trackers."""

from __future__ import annotations

import importlib.util
import json

import pytest
from test_cli_bad_input import assert_bad_input, config_text, run_cli, sources, write_config
from trainer_setup import make_config, make_data, make_model_and_tokenizer

from bds.config import flat_config, load_config
from bds.errors import ConfigError
from bds.training.config import TRACKERS

__all__ = ["sources"]  # the fixture, used by name below


def with_report_to(tmp_path, sources, value: str):
    text = config_text(
        sources["benign"], sources["harmful"], extra=f"train:\n  report_to: {value}\n"
    )
    return write_config(tmp_path, text)


def pretend(monkeypatch, installed: tuple[str, ...] = (), missing: tuple[str, ...] = ()) -> None:
    """find_spec as if these packages were (not) installed, whatever this machine has."""
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name in installed:
            return object()
        return None if name in missing else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_the_known_trackers_are_accelerates():
    from accelerate.utils import LoggerType

    assert set(TRACKERS) == {t.value for t in LoggerType} - {"all"}


def test_an_unknown_tracker_names_the_field_and_a_near_match(tmp_path, sources):
    with pytest.raises(ConfigError) as excinfo:
        load_config(with_report_to(tmp_path, sources, "[wandbb]"))
    message = str(excinfo.value)
    assert "run.yaml:9: train.report_to: unknown tracker 'wandbb' (did you mean wandb?)" in message
    assert "tensorboard" in message


def test_a_tracker_that_is_not_installed_says_how_to_install_it(tmp_path, sources, monkeypatch):
    pretend(monkeypatch, missing=("wandb",))
    with pytest.raises(
        ConfigError, match=r"train\.report_to: wandb is not installed; pip install wandb"
    ):
        load_config(with_report_to(tmp_path, sources, "wandb"))


def test_an_installed_tracker_as_a_name_or_a_list(tmp_path, sources, monkeypatch):
    pretend(monkeypatch, installed=("tensorboardX", "mlflow"))
    assert load_config(with_report_to(tmp_path, sources, "tensorboard")).train.report_to == [
        "tensorboard"
    ]
    cfg = load_config(with_report_to(tmp_path, sources, "[tensorboard, mlflow, all]"))
    assert cfg.train.report_to == ["tensorboard", "mlflow", "all"]


def test_the_cli_refuses_a_bad_tracker_in_one_sentence(tmp_path, sources, capsys):
    cfg = with_report_to(tmp_path, sources, "[tensorbord]")
    assert_bad_input(
        run_cli(capsys, "data", "preview", str(cfg), "--no-tokens"),
        "train.report_to: unknown tracker 'tensorbord' (did you mean tensorboard?)",
    )
    assert_bad_input(
        run_cli(capsys, "data", "preview", str(tmp_path / "run.yaml"), "train.report_to=42"),
        "override train.report_to=42: train.report_to: must be a tracker name or a list",
    )


def test_flat_config_holds_every_field_as_a_scalar():
    flat = flat_config(make_config(max_steps=2))
    assert flat["train.lr"] == 3e-3 and flat["data.max_length"] == 64
    assert json.loads(flat["train.lora.target_modules"])[0] == "q_proj"
    assert flat["model.name"] == "embedded:smollm2-135m-instruct"
    assert flat["train.max_steps"] == 2 and flat["align.retain"] == "null"
    assert all(isinstance(v, str | int | float | bool) for v in flat.values())


def test_the_trainer_hands_the_whole_config_to_the_trackers(tmp_path, monkeypatch, one_thread):
    from accelerate import Accelerator

    seen = {}
    monkeypatch.setattr(
        Accelerator, "init_trackers", lambda self, name, config=None, **kw: seen.update(config)
    )
    cfg = make_config("sft", max_steps=2)
    cfg.train.report_to = ["tensorboard"]  # past the check: accelerate skips it if absent
    model, tok = make_model_and_tokenizer()
    from bds.training.trainer import train

    train(cfg, tmp_path / "run", model=model, tokenizer=tok, data=make_data(20), progress=False)
    assert seen == flat_config(cfg)
    assert seen["defense.name"] == "sft" and seen["train.max_steps"] == 2
