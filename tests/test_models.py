import pytest
import torch

from bds.config import ModelConfig
from bds.errors import BDSInputError
from bds.models import load_model, load_tokenizer, resolve_model_path
from bds.tiny import build_tiny_model, save_tiny_checkpoint


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tiny_models_train_a_step(arch, tiny_tokenizer):
    model = build_tiny_model(arch, vocab_size=len(tiny_tokenizer))
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    ids = torch.tensor([tiny_tokenizer("hello there, general")["input_ids"]])
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert out.logits.shape == (1, ids.shape[1], len(tiny_tokenizer))


def test_tiny_builders_are_seeded(tiny_tokenizer):
    a = build_tiny_model("llama", vocab_size=len(tiny_tokenizer), seed=1)
    b = build_tiny_model("llama", vocab_size=len(tiny_tokenizer), seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_local_folder_loads_like_a_hub_model(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "tiny", "gpt2")
    cfg = ModelConfig(name=str(folder))
    assert resolve_model_path(str(folder)) == str(folder)
    assert type(load_model(cfg)).__name__ == "GPT2LMHeadModel"
    tok = load_tokenizer(cfg, padding_side="left")
    assert tok.pad_token is not None and tok.padding_side == "left"


def test_unknown_model_paths_are_clear_errors(tmp_path):
    with pytest.raises(
        BDSInputError, match=r"model\.name: \./no/such/model is neither an existing folder"
    ):
        resolve_model_path("./no/such/model")
    with pytest.raises(BDSInputError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(BDSInputError, match="unknown embedded model 'gpt-5'"):
        resolve_model_path("embedded:gpt-5")
    # A hub id cannot load offline: one sentence, no traceback, no minute of retries.
    with pytest.raises(BDSInputError, match=r"model\.name: could not load nobody/no-such-model"):
        load_model(ModelConfig(name="nobody/no-such-model"))


@pytest.mark.slow
def test_embedded_model_converts_once_and_loads_from_the_cache():
    from bds.assets import embedded_model_dir

    folder = embedded_model_dir("smollm2-135m-instruct")
    assert (folder / "model.safetensors").is_file()
    cfg = ModelConfig()
    model = load_model(cfg)
    tok = load_tokenizer(cfg)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    # The converted checkpoint is a working model: the next token after a prompt is sensible.
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        nxt = model(input_ids=ids).logits[0, -1].argmax().item()
    assert "Paris" in tok.decode([nxt])
