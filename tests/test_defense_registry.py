"""The defense registry: picked by name in the config, checked at load time, torch-free."""

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import pytest

import bds.align as align_module
from bds.config import RunConfig, load_config
from bds.data.pipeline import prepare_data
from bds.defenses.registry import DEFENSES, DefenseSettings, defense_names, settings_class
from bds.errors import ConfigError

GOOD = """\
data:
  benign: {kind: embedded, name: sentiment-train}
  harmful: {kind: embedded, name: pyrit-harmful}
  alignment: {kind: embedded, name: pyrit-safe}
  n: 20
"""


def load(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(GOOD + text)
    return load_config(path)


def test_a_defense_is_picked_by_name_with_its_own_settings(tmp_path):
    cfg = load(tmp_path, "defense: {name: lisa, rho: 0.01, alignment_steps: 10}\n")
    assert type(cfg.defense).__name__ == "LisaSettings"
    assert (cfg.defense.rho, cfg.defense.alignment_steps, cfg.defense.finetune_steps) == (
        0.01,
        10,
        900,
    )
    assert load(tmp_path, "").defense.name == "bds"  # the default


@pytest.mark.parametrize(
    "text,message",
    [
        ("defense: {name: no-such}\n", r"run.yaml:6: defense.name: unknown defense 'no-such'; "
         r"choose one of sft, mix, bds, .*lisa"),
        ("defense: {name: vaccine}\n", r"defense.name: vaccine is a alignment-stage defense; "
         r"defense takes one of sft"),
        ("align:\n  defense: {name: booster, lamb: -1}\n", r"align.defense.lamb: must be >= 0"),
        ("defense: {rho: 1}\n", r"defense.name: is required; choose one of sft, mix"),
        ("defense:\n  name: lisa\n  lamb: 1\n", r"run.yaml:8: defense.lamb: unknown key; "
         r"known keys here: name, rho, alignment_steps"),
        ("defense:\n  name: lisa\n  rho: -1\n", r"run.yaml:8: defense.rho: must be >= 0"),
        ("defense: {name: mix, alignment_weight: x}\n", r"defense.alignment_weight: must be a number"),
        ("train: {mode: sft}\n", r"run.yaml:6: train.mode: moved to the top-level `defense:`"),
        ("train:\n  drive: conflict\n", r"train.drive: moved to the top-level `defense:`"),
        ("align:\n  defense: {name: lisa}\n", r"align.defense.name: lisa is a fine-tuning-stage "
         r"defense; align.defense takes one of sft"),
    ],
)  # fmt: skip
def test_bad_defense_settings_fail_at_load_time(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


def test_every_registered_defense_builds_with_its_defaults():
    for name in DEFENSES:
        settings = settings_class(name)()
        assert settings.name == name and settings.stages
        assert settings.needs <= {"user", "alignment", "harmful"}
    assert "oracle-filter" in defense_names("data filter")
    assert defense_names("alignment") == ["sft", "vaccine", "booster", "repnoise"]


def test_config_loading_stays_torch_free(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(GOOD + "defense: {name: ldifs}\n")
    code = (
        "import sys; from bds.config import load_config; "
        f"load_config({str(path)!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@dataclass
class FakeAlignmentSettings(DefenseSettings):
    """An alignment-stage defense, registered only in this test."""

    stages: ClassVar = ("alignment",)
    name: str = "fake-align"
    strength: float = 2.0


def test_the_aligned_models_key_names_an_alignment_stage_defense(tmp_path, monkeypatch):
    monkeypatch.setitem(DEFENSES, "fake-align", f"{__name__}:FakeAlignmentSettings:SFT")
    specs = []

    class Stop(Exception):
        pass

    def capture(spec):
        specs.append(spec)
        raise Stop

    monkeypatch.setattr(align_module, "short_digest", capture)
    cfg = load(tmp_path, "")
    data = prepare_data(cfg.data)
    for defense in (None, FakeAlignmentSettings(), FakeAlignmentSettings(strength=3.0)):
        if defense is not None:
            cfg = dataclasses.replace(cfg, align=dataclasses.replace(cfg.align, defense=defense))
        with pytest.raises(Stop):
            align_module.align_stage(cfg, data, log=lambda *_: None)
    default, fake, stronger = specs
    assert "defense" not in default  # plain SFT keeps the key cached models already have
    assert fake["defense"] == {"name": "fake-align", "strength": 2.0}
    assert stronger["defense"]["strength"] == 3.0
    with pytest.raises(ConfigError, match="defense.name: fake-align is a alignment-stage"):
        load(tmp_path, "defense: {name: fake-align}\n")
    assert isinstance(cfg, RunConfig)
