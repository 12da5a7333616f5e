"""Prompt templates: the Alpaca template of the reference protocol, or the model's chat template.

A template splits a record into masked text (the prompt, user turns) and learned text
(the completion, assistant turns). Generation at evaluation time uses the same prompt.
`data.template` applies to instruction records (and prompt/completion strings); a
conversation (messages) is always rendered with the model's chat template, and a model
without one is refused with a sentence saying so (never flattened into text silently).
"""

from __future__ import annotations

from typing import Any, Literal

from bds.data.schema import Record
from bds.errors import BDSInputError

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


# A rendered sample: text pieces in order, each marked learned (True) or masked (False).
Segments = list[tuple[str, bool]]


def render_prompt(record: Record, template: TemplateName, tokenizer: Any = None) -> str:
    """The text the model sees before its (first learned) answer."""
    if record.form == "conversation":
        first = record.trained[0] if record.trained else len(record.messages)
        return _chat(tokenizer, record, list(record.messages[:first]), generation_prompt=True)
    if record.form == "text":
        return ""
    if template == "alpaca":
        fmt = ALPACA_WITH_INPUT if record.input else ALPACA_NO_INPUT
        return fmt.format(instruction=record.instruction, input=record.input)
    return _chat(tokenizer, record, _chat_messages(record), generation_prompt=True)


def render_segments(record: Record, template: TemplateName, tokenizer: Any = None) -> Segments:
    """The whole sample as masked / learned pieces (neighbours with the same flag merged).

    Instruction records: the prompt (Alpaca or the chat template's generation prompt), then
    the response. Text records: the text, all learned. Conversations, and instruction
    records under template chat: the chat template rendered turn by turn, each learned
    turn's text being what the template adds after the generation prompt (its end marker
    included), everything else masked.
    """
    if record.form == "text":
        return [(record.response, True)]
    if record.form == "instruction" and template == "alpaca":
        return [(render_prompt(record, template), False), (record.response, True)]
    if record.form == "conversation":
        messages, trained = list(record.messages), record.trained
    else:
        messages = _chat_messages(record) + [{"role": "assistant", "content": record.response}]
        trained = (len(messages) - 1,)
    pieces: Segments = []
    done = ""
    for k in trained:
        asked = _chat(tokenizer, record, messages[:k], generation_prompt=True)
        answered = _chat(tokenizer, record, messages[: k + 1])
        if not (asked.startswith(done) and answered.startswith(asked)):
            raise BDSInputError(
                f"record {record.id}: the chat template of {_model_name(tokenizer)} does not "
                f"render turn {k} as an extension of the turns before it, so its answer cannot "
                "be told from its prompt; use a model whose template does, or template: alpaca "
                "with prompt/completion strings"
            )
        pieces += [(asked[len(done) :], False), (answered[len(asked) :], True)]
        done = answered
    if len(trained) == 0 or trained[-1] < len(messages) - 1:  # turns after the last learned one
        pieces.append((_chat(tokenizer, record, messages)[len(done) :], False))
    return _merge(pieces)


def render_completion(record: Record, template: TemplateName, tokenizer: Any = None) -> str:
    """The learned text of a single-answer sample (the chat template's end marker included).

    For Alpaca the end of the answer is the tokenizer's EOS token, added as an id by the
    tokeniser (not as text, which some tokenizers would split).
    """
    return "".join(
        text for text, learned in render_segments(record, template, tokenizer) if learned
    )


def adds_eos(record: Record, template: TemplateName) -> bool:
    """Whether the tokeniser ends the answer with EOS (a chat template writes its own end)."""
    return record.form == "text" or (record.form == "instruction" and template == "alpaca")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _chat(
    tokenizer: Any, record: Record, messages: list[dict[str, Any]], generation_prompt: bool = False
) -> str:
    if not has_chat_template(tokenizer):
        raise BDSInputError(
            f"record {record.id}: {_model_name(tokenizer)} has no chat template, which "
            + (
                "conversational data (messages) needs; give a model with one, or the data as "
                "prompt/completion strings with data.template: alpaca"
                if record.form == "conversation"
                else "template: chat needs; use template: alpaca"
            )
        )
    if not messages:
        return ""
    try:
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=False
        )
    except Exception as exc:  # jinja2's TemplateError: the template refuses this conversation
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BDSInputError(
            f"record {record.id}: the chat template of {_model_name(tokenizer)} refused the "
            f"conversation ({first[:200]}); fix the roles or their order"
        ) from None


def _merge(pieces: Segments) -> Segments:
    out: Segments = []
    for text, learned in pieces:
        if not text:
            continue
        if out and out[-1][1] == learned:
            out[-1] = (out[-1][0] + text, learned)
        else:
            out.append((text, learned))
    return out


def _model_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "the model")


def _chat_messages(record: Record) -> list[dict[str, str]]:
    content = record.instruction if not record.input else f"{record.instruction}\n\n{record.input}"
    return [{"role": "user", "content": content}]
