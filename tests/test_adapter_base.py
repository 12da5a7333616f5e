"""Adapters that can be shared: adapter_config.json names a base model others can load (the
embedded name or a hub id, never this machine's cache folder), and `bds eval --adapter`
takes a hub id (the hub is replaced by a local folder here; the real call, offline, fails
in one sentence)."""

from __future__ import annotations

import json
import warnings

import pytest
from trainer_setup import make_config, make_data

from bds.config import ModelConfig
from bds.errors import BDSInputError
from bds.tiny import save_tiny_checkpoint

EMBEDDED = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture
def embedded_is_tiny(monkeypatch, tiny_folder):
    """The embedded name resolves to a tiny checkpoint (as it resolves to a cache folder)."""
    import bds.models

    real = bds.models.resolve_model_path
    monkeypatch.setattr(
        bds.models,
        "resolve_model_path",
        lambda name, revision=None: str(tiny_folder) if name == EMBEDDED else real(name, revision),
    )


def test_a_trained_adapter_names_the_embedded_model_not_the_cache(
    tmp_path, embedded_is_tiny, one_thread
):
    from bds.training.trainer import train

    cfg = make_config("sft", max_steps=1, lora={"target_modules": ["q_proj", "v_proj"]})
    assert cfg.model.name == EMBEDDED
    from bds.models import load_tokenizer

    tok = load_tokenizer(cfg.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, tmp_path / "run", tokenizer=tok, data=make_data(20), progress=False)
    # PEFT is not sent looking for a config under the (non-local) name
    assert not [w for w in caught if "Could not find a config file" in str(w.message)]
    adapter_config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == EMBEDDED


def test_hub_ids_and_folders_are_recorded_as_given(tiny_folder):
    from bds.models import load_model

    assert load_model(ModelConfig(name=str(tiny_folder))).name_or_path == str(tiny_folder)


@pytest.fixture
def adapter_folder(tmp_path, tiny_folder):
    from peft import LoraConfig, get_peft_model

    from bds.models import load_model

    base = load_model(ModelConfig(name=str(tiny_folder)))
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_eval_adapter_from_a_hub_id(monkeypatch, tiny_folder, adapter_folder):
    import huggingface_hub
    from peft import PeftModel

    from bds.eval.generate import load_generator

    calls = []

    def snapshot_download(repo_id, allow_patterns=None, **kw):
        calls.append((repo_id, allow_patterns))
        return str(adapter_folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    model, _ = load_generator(ModelConfig(name=str(tiny_folder)), "someone/bds-adapter")
    assert isinstance(model, PeftModel)
    (repo, patterns), *_ = calls
    assert repo == "someone/bds-adapter"
    assert not any(p.endswith((".bin", ".pt", ".pkl")) for p in patterns)  # no pickles


def test_a_hub_repo_without_an_adapter_is_refused(monkeypatch, tmp_path):
    import huggingface_hub

    from bds.models import resolve_adapter

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(tmp_path))
    with pytest.raises(BDSInputError, match="the hub repo someone/model holds no adapter_config"):
        resolve_adapter("someone/model")


def test_an_unreachable_hub_adapter_is_one_sentence():
    """The real hub call, offline (conftest sets HF_HUB_OFFLINE=1) and not cached."""
    from bds.models import resolve_adapter

    with pytest.raises(
        BDSInputError, match=r"eval\.adapter: nobody/no-such-adapter-x1 is no local folder"
    ):
        resolve_adapter("nobody/no-such-adapter-x1")


@pytest.mark.parametrize("given", ["./missing", "runs/a/adapter", "~/nowhere"])
def test_missing_folders_are_not_taken_for_hub_ids(given):
    from bds.models import resolve_adapter

    with pytest.raises(BDSInputError, match="is not a PEFT adapter folder"):
        resolve_adapter(given)
