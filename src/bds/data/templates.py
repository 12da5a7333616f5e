"""Prompt templates: the Alpaca template of the reference protocol, or the model's chat template.

A template splits a record into the prompt (masked from the loss) and the completion (the
tokens the model learns). Generation at evaluation time uses the same prompt.
"""

from __future__ import annotations

from typing import Any, Literal

from bds.data.schema import Record

TemplateName = Literal["alpaca", "chat"]

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def render_prompt(record: Record, template: TemplateName, tokenizer: Any = None) -> str:
    """The text the model sees before its answer."""
    if template == "alpaca":
        fmt = ALPACA_WITH_INPUT if record.input else ALPACA_NO_INPUT
        return fmt.format(instruction=record.instruction, input=record.input)
    return tokenizer.apply_chat_template(
        _chat_messages(record), add_generation_prompt=True, tokenize=False
    )


def render_completion(record: Record, template: TemplateName, tokenizer: Any = None) -> str:
    """The answer text that follows the prompt, including the chat template's end marker.

    For Alpaca the end of the answer is the tokenizer's EOS token, added as an id by the
    tokeniser (not as text, which some tokenizers would split).
    """
    if template == "alpaca":
        return record.response
    prompt = render_prompt(record, template, tokenizer)
    full = tokenizer.apply_chat_template(
        _chat_messages(record) + [{"role": "assistant", "content": record.response}],
        tokenize=False,
    )
    if not full.startswith(prompt):
        raise ValueError(
            "the chat template does not extend the generation prompt; use template: alpaca"
        )
    return full[len(prompt) :]


def adds_eos(template: TemplateName) -> bool:
    return template == "alpaca"


def _chat_messages(record: Record) -> list[dict[str, str]]:
    content = record.instruction if not record.input else f"{record.instruction}\n\n{record.input}"
    return [{"role": "user", "content": content}]
