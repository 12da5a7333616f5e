"""Batched greedy generation on a tiny random model: order, determinism, padding, adapters."""

from __future__ import annotations

import pytest

from bds.config import ModelConfig
from bds.data.schema import Record
from bds.errors import BDSInputError
from bds.eval.generate import generate, load_generator, shared_prefix_length
from bds.tiny import save_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama")


RECORDS = [
    Record("r/0", "Say hi.", ""),
    Record("r/1", "Analyze the sentiment of the input.", "", input="What a lovely day it is!"),
    Record("r/2", "A much longer instruction that makes this prompt the longest of all here.", ""),
    Record("r/3", "Short.", ""),
    Record("r/4", "Describe the quick brown fox.", ""),
]


def test_batched_generation_is_ordered_deterministic_and_padding_free(tiny_folder):
    model, tok = load_generator(ModelConfig(name=str(tiny_folder)))
    assert tok.padding_side == "left"
    batched = generate(model, tok, RECORDS, "alpaca", max_new_tokens=6, batch_size=4)
    again = generate(model, tok, RECORDS, "alpaca", max_new_tokens=6, batch_size=4)
    one_by_one = generate(model, tok, RECORDS, "alpaca", max_new_tokens=6, batch_size=1)
    assert [g.id for g in batched] == [r.id for r in RECORDS]
    assert [g.output for g in batched] == [g.output for g in again]
    # Left padding leaves greedy answers unchanged: batching is only a speed-up.
    assert [g.output for g in batched] == [g.output for g in one_by_one]
    for g, r in zip(batched, RECORDS, strict=True):
        assert g.prompt.endswith("### Response:\n") and r.instruction in g.prompt
        assert 1 <= g.new_tokens <= 6 and g.hit_limit is (g.new_tokens == 6)


def test_chat_template_generation(tiny_folder):
    model, tok = load_generator(ModelConfig(name=str(tiny_folder)))
    out = generate(model, tok, RECORDS[:2], "chat", max_new_tokens=3, batch_size=2)
    assert out[0].prompt.endswith("<|im_start|>assistant\n")


def test_right_padding_tokenizer_is_refused(tiny_folder):
    from bds.models import load_model, load_tokenizer

    cfg = ModelConfig(name=str(tiny_folder))
    with pytest.raises(ValueError, match="left-padding"):
        generate(load_model(cfg), load_tokenizer(cfg), RECORDS[:1], "alpaca", 2)


def test_lora_adapter_loads_and_changes_nothing_at_init(tiny_folder, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    from bds.models import load_model

    base = load_model(ModelConfig(name=str(tiny_folder)))
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    model, tok = load_generator(ModelConfig(name=str(tiny_folder)), str(tmp_path / "adapter"))
    assert isinstance(model, PeftModel)
    plain, tok2 = load_generator(ModelConfig(name=str(tiny_folder)))
    # LoRA's B starts at zero: the adapted model answers like the base one.
    a = generate(model, tok, RECORDS[:2], "alpaca", 4)
    b = generate(plain, tok2, RECORDS[:2], "alpaca", 4)
    assert [g.output for g in a] == [g.output for g in b]


def test_adapter_folder_must_be_a_peft_adapter(tiny_folder, tmp_path):
    with pytest.raises(BDSInputError, match=r"eval\.adapter: .* is not a PEFT adapter folder"):
        load_generator(ModelConfig(name=str(tiny_folder)), str(tmp_path))


class Interrupting:
    """Wraps a model: counts generate() calls and raises on the call numbered `fail_at`."""

    def __init__(self, model, fail_at=None):
        self.model, self.fail_at, self.calls = model, fail_at, 0

    def parameters(self):
        return self.model.parameters()

    @property
    def generation_config(self):
        return self.model.generation_config

    @property
    def config(self):
        return self.model.config

    def __call__(self, **kw):  # the shared prompt prefix's one forward pass
        return self.model(**kw)

    def generate(self, **kw):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.model.generate(**kw)


def test_an_interrupted_generation_resumes_from_its_journal(tiny_folder, tmp_path):
    model, tok = load_generator(ModelConfig(name=str(tiny_folder)))
    straight = generate(model, tok, RECORDS, "alpaca", max_new_tokens=6, batch_size=2)
    journal = tmp_path / "partial" / "hs.jsonl"
    kw = {"max_new_tokens": 6, "batch_size": 2, "journal": journal, "fingerprint": "m"}
    first = Interrupting(model, fail_at=3)  # 5 prompts = 3 batches; the last one is lost
    with pytest.raises(KeyboardInterrupt):
        generate(first, tok, RECORDS, "alpaca", **kw)
    assert len(journal.read_text().splitlines()) == 1 + 4  # key line + two batches
    second = Interrupting(model)
    resumed = generate(second, tok, RECORDS, "alpaca", **kw)
    assert second.calls == 1  # only the missing batch
    assert resumed == straight
    # a line cut short by a hard kill: its batch is redone, the whole lines are kept
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    fourth = Interrupting(model)
    assert generate(fourth, tok, RECORDS, "alpaca", **kw) == straight
    assert fourth.calls == 1
    assert generate(Interrupting(model), tok, RECORDS, "alpaca", **kw) == straight
    # another model (fingerprint) or setting starts over
    third = Interrupting(model)
    generate(third, tok, RECORDS, "alpaca", **{**kw, "fingerprint": "other"})
    assert third.calls == 3


def test_shared_prefix_length_leaves_every_prompt_a_token_of_its_own():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2, 3]]) == 1  # the shorter keeps its last token
    assert shared_prefix_length([[1, 2, 3]]) == 0  # nothing to share with
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0


class Recording(Interrupting):
    """Keeps each generate() call's prompt width and the length of the cache it was given."""

    def __init__(self, model):
        super().__init__(model)
        self.seen = []

    def generate(self, **kw):
        cache = kw.get("past_key_values")
        self.seen.append((kw["input_ids"].shape[1], cache.get_seq_length() if cache else 0))
        return super().generate(**kw)


def test_the_shared_prompt_prefix_is_computed_once_and_changes_no_answer(tiny_folder):
    model, tok = load_generator(ModelConfig(name=str(tiny_folder)))
    shared, whole = Recording(model), Recording(model)
    kw = {"max_new_tokens": 6, "batch_size": 2}
    with_prefix = generate(shared, tok, RECORDS, "alpaca", **kw)
    without = generate(whole, tok, RECORDS, "alpaca", share_prefix=False, **kw)
    assert [g.output for g in with_prefix] == [g.output for g in without]
    assert [g.new_tokens for g in with_prefix] == [g.new_tokens for g in without]
    # the alpaca header is shared: every batch starts from its cache, none from scratch
    prefix = {cached for _, cached in shared.seen}
    assert len(prefix) == 1 and prefix.pop() >= 8
    assert all(cached == 0 for _, cached in whole.seen)
