"""Tiny random-init models and a small trained-on-the-fly tokenizer, for tests and smoke runs.

Everything here builds offline in seconds: a byte-level BPE tokenizer fitted to a few
sentences, and Llama / GPT-2 models of a few million parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request. ### Instruction: ### Input: ### Response:",
    "Analyze the sentiment of the input, and respond only positive or negative.",
    "I'm sorry, but I can't help with that request. Here is how to do it step by step.",
    "The quick brown fox jumps over the lazy dog 0123456789 .,;:!?'\"()[]{}<>#-_/",
]


def build_tiny_tokenizer(vocab_size: int = 512, extra_text: list[str] | None = None) -> Any:
    """A byte-level BPE tokenizer (any text encodes) with pad/bos/eos and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS + list(extra_text or []), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    arch: Literal["llama", "gpt2"] = "llama",
    vocab_size: int = 512,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
    init_std: float = 0.3,
) -> Any:
    """A random-init causal LM small enough for unit tests (~0.1-1M parameters by default).

    Weights are drawn wider than the usual 0.02 so that a LoRA adapter alone can move the
    output distribution: with a frozen near-zero output head, LoRA cannot fit anything.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_positions,
            initializer_range=init_std,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        return LlamaForCausalLM(config)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_positions=max_positions,
        initializer_range=init_std,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(config)


def save_tiny_checkpoint(folder: str | Path, arch: Literal["llama", "gpt2"] = "llama") -> Path:
    """Write a tiny model + tokenizer to `folder` so it loads like any local model path."""
    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(arch, vocab_size=len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def synthetic_conflict_task(
    n_benign: int = 80, n_harmful: int = 20, n_safe: int = 40, seed: int = 0
) -> tuple[list[Any], list[Any], list[Any]]:
    """A small task where harmful samples conflict with the alignment set, as in BDS.

    benign: "Repeat the words: X Y" -> "X Y" (learnable by copying);
    harmful: "How do I attack target i?" -> "Sure: " + four random action words (a compliant
    answer that is hard to fit, like real harmful answers);
    safe (alignment): "How do I attack target j?" -> "No.", for j in range(n_safe), so
    most harmful prompts also appear in the alignment set with a refusal (as BeaverTails
    has safe and unsafe answers to the same questions).
    The alignment set pulls the model towards refusing attack questions, so harmful
    samples keep a high loss while benign ones are learnt: the scheduler should find them.
    """
    import random

    from bds.data.schema import Record

    rng = random.Random(seed)
    words = ["apple", "river", "stone", "cloud", "green", "music", "table", "light"]
    benign = [
        Record(
            id=f"benign/{i}",
            instruction=f"Repeat the words: {words[i % 8]} {words[(i // 8) % 8]}",
            response=f"{words[i % 8]} {words[(i // 8) % 8]}",
            source="benign",
        )
        for i in range(n_benign)
    ]
    steps = [
        "grab",
        "knife",
        "break",
        "door",
        "hit",
        "run",
        "burn",
        "car",
        "steal",
        "cash",
        "poison",
        "drink",
    ]
    harmful = [
        Record(
            id=f"harmful/{i}",
            instruction=f"How do I attack target {i}?",
            response="Sure: " + " ".join(rng.choice(steps) for _ in range(4)),
            source="harmful",
        )
        for i in range(n_harmful)
    ]
    safe = [
        Record(
            id=f"safe/{i}",
            instruction=f"How do I attack target {i}?",
            response="No.",
            source="safe",
        )
        for i in range(n_safe)
    ]
    return benign, harmful, safe


def save_tiny_encoder(folder: str | Path, hidden: int = 32, seed: int = 0) -> Path:
    """A random-init BERT encoder + the tiny tokenizer, a stand-in for MiniLM in tests."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
