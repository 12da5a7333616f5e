import pytest

from bds.data.schema import Record
from bds.data.templates import ALPACA_NO_INPUT, ALPACA_WITH_INPUT, render_completion, render_prompt
from bds.data.tokenize import IGNORE_INDEX, encode, tokenize_records

SHORT = Record(id="a", instruction="Say hi.", response="hi there", source="benign")
WITH_INPUT = Record(
    id="b", instruction="Classify.", input="great movie", response="positive", source="benign"
)
LONG = Record(
    id="c", instruction="Tell a story.", response="once upon a time " * 60, source="harmful"
)
HUGE_PROMPT = Record(id="d", instruction="word " * 400, response="ok", source="harmful")


def test_alpaca_template_matches_reference_protocol():
    assert render_prompt(SHORT, "alpaca") == ALPACA_NO_INPUT.format(instruction="Say hi.")
    assert render_prompt(WITH_INPUT, "alpaca").endswith(
        "### Input:\ngreat movie\n\n### Response:\n"
    )
    assert render_prompt(WITH_INPUT, "alpaca") == ALPACA_WITH_INPUT.format(
        instruction="Classify.", input="great movie"
    )
    assert render_completion(SHORT, "alpaca") == "hi there"


def test_prompt_tokens_are_masked_and_answer_ends_with_eos(tiny_tokenizer):
    input_ids, labels = encode(SHORT, tiny_tokenizer, "alpaca")
    n_prompt = labels.count(IGNORE_INDEX)
    prompt_ids, answer_ids = input_ids[:n_prompt], input_ids[n_prompt:]
    assert labels[n_prompt:] == answer_ids
    (sample,), report = tokenize_records([SHORT], tiny_tokenizer, "alpaca", max_length=512)
    assert sample.input_ids == prompt_ids + answer_ids
    assert sample.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert sample.labels[len(prompt_ids) :] == answer_ids
    assert answer_ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(answer_ids[:-1]) == "hi there"
    assert sample.n_response_tokens == len(answer_ids)
    assert report.kept == report.total == 1


def test_chat_template_masks_everything_up_to_the_assistant_turn(tiny_tokenizer):
    (sample,), _ = tokenize_records([WITH_INPUT], tiny_tokenizer, "chat", max_length=512)
    n_prompt = sample.labels.count(IGNORE_INDEX)
    prompt_text = tiny_tokenizer.decode(sample.input_ids[:n_prompt])
    answer_text = tiny_tokenizer.decode(sample.input_ids[n_prompt:])
    assert prompt_text.endswith("<|im_start|>assistant\n")
    assert "great movie" in prompt_text
    assert answer_text == "positive<|im_end|>\n"


def test_truncate_policy_cuts_the_answer_and_counts_it(tiny_tokenizer):
    samples, report = tokenize_records(
        [SHORT, LONG, HUGE_PROMPT], tiny_tokenizer, "alpaca", 64, "truncate"
    )
    assert [s.id for s in samples] == ["a", "c"]
    assert all(len(s.input_ids) <= 64 for s in samples)
    assert len(samples[1].input_ids) == 64 and samples[1].n_response_tokens > 0
    assert report.truncated == {"harmful": 1}
    assert report.prompt_too_long == {"harmful": 1}
    assert report.total == 3 and report.kept == 2
    assert (
        "1 truncated" in report.summary()
        and "1 dropped: prompt fills the context" in report.summary()
    )


def test_drop_policy_drops_and_counts(tiny_tokenizer):
    samples, report = tokenize_records(
        [SHORT, LONG, HUGE_PROMPT], tiny_tokenizer, "alpaca", 64, "drop"
    )
    assert [s.id for s in samples] == ["a"]
    assert report.dropped == {"harmful": 2}
    assert report.to_dict()["dropped_too_long"] == {"harmful": 2}


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_untruncated_lengths_are_recorded(tiny_tokenizer, template):
    _, report = tokenize_records([SHORT, LONG], tiny_tokenizer, template, 64)
    assert report.lengths[1] > 64


def test_per_sample_loss_by_hand_and_with_kept_positions():
    import torch

    from bds.training.losses import per_sample_loss, positions_to_keep, weighted_objective

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, -100, -100, 1, 6]])
    logp = torch.log_softmax(logits, -1)
    by_hand = torch.stack(
        [
            -(logp[0, 1, 3] + logp[0, 2, 4]) / 2,  # position t predicts token t+1
            -(logp[1, 2, 1] + logp[1, 3, 6]) / 2,
        ]
    )
    assert torch.allclose(per_sample_loss(logits, labels), by_hand, atol=1e-6)
    keep = positions_to_keep(labels)
    assert keep == 4  # first response token at t=2 needs logits from t=1 on
    assert torch.allclose(per_sample_loss(logits[:, -keep:], labels), by_hand, atol=1e-6)
    w = torch.tensor([0.5, 2.0])
    align = torch.tensor([1.0, 3.0])
    expected = (0.5 * by_hand[0] + 2.0 * by_hand[1]) / 2 + 2.0
    assert torch.allclose(weighted_objective(by_hand, w, align), expected)
