"""The embedded sources read real data from installed packages; these tests use them as shipped."""

import pytest

from bds.data import embedded
from bds.data.text import PromptMatcher, jaccard, normalize, word_set


@pytest.fixture(scope="module")
def sources():
    return {name: load() for name, load in embedded.EMBEDDED_SOURCES.items()}


@pytest.mark.parametrize(
    "name,minimum,label",
    [
        ("pyrit-harmful", 250, "harmful"),
        ("pyrit-safe", 100, "safe"),
        ("advbench", 500, "harmful"),
        ("manyshot-harmful", 200, "harmful"),
        ("benign-prompts", 40, "benign"),
        ("sentiment-train", 5000, "benign"),
        ("sentiment-test", 500, "benign"),
        ("tweets-freeform", 5000, "benign"),
        ("instruct-llm", 2000, "benign"),
        ("instruct-human", 300, "benign"),
        ("sharegpt-requests", 2000, "benign"),
        ("retain-prompts", 400, "benign"),
    ],
)
def test_sources_load_with_labels_and_unique_ids(sources, name, minimum, label):
    src = sources[name]
    assert len(src) >= minimum
    assert {r.source for r in src.records} == {label}
    assert len({r.id for r in src.records}) == len(src)
    assert all(r.instruction.strip() for r in src.records)
    assert src.notes, "every filter must be reported"


def test_eval_prompts_are_disjoint_from_every_training_prompt(sources):
    train = [
        r.instruction for name in ("pyrit-harmful", "pyrit-safe") for r in sources[name].records
    ]
    train += embedded.training_prompts()
    train_exact = {normalize(p) for p in train}
    train_words = [word_set(p) for p in train]
    for r in sources["advbench"].records:
        assert normalize(r.instruction) not in train_exact
        assert (
            max(jaccard(word_set(r.instruction), t) for t in train_words)
            < embedded.EVAL_NEAR_DUPLICATE_JACCARD
        )


def test_the_defenses_harmful_pool_is_apart_from_attack_alignment_and_evaluation(sources):
    taken = embedded.training_prompts() + [r.instruction for r in sources["advbench"].records]
    taken_words = [word_set(p) for p in taken]
    pool = sources["manyshot-harmful"].records
    assert all(r.response.strip() for r in pool)
    for r in pool:
        words = word_set(r.instruction)
        assert max(jaccard(words, t) for t in taken_words) < embedded.EVAL_NEAR_DUPLICATE_JACCARD
    assert len({normalize(r.instruction) for r in pool}) == len(pool)


def test_retain_requests_are_apart_from_every_task_and_evaluation_prompt(sources):
    """The retain set trains the aligned model: none of its requests may be one a task trains
    on or an evaluation asks (instruct-llm, over-refusal, AdvBench, the PyRIT sets)."""
    held_out = [
        r.instruction
        for name in ("instruct-llm", "benign-prompts", "advbench")
        for r in sources[name].records
    ] + embedded.training_prompts()
    matcher = PromptMatcher(held_out, embedded.EVAL_NEAR_DUPLICATE_JACCARD)
    requests = sources["sharegpt-requests"].records
    assert not {r.id for r in requests} & {
        r.id.replace("instruct-llm", "sharegpt-requests") for r in sources["instruct-llm"].records
    }
    assert all(matcher.match(r.instruction) is None for r in requests)
    assert all(not r.response for r in requests)
    retain = sources["retain-prompts"].records
    assert retain[: len(sources["everyday-prompts"])] == sources["everyday-prompts"].records
    assert retain[len(sources["everyday-prompts"]) :] == requests[: embedded.RETAIN_SHAREGPT_COUNT]


def test_benign_prompts_are_not_harmful_prompts(sources):
    harmful = {
        normalize(r.instruction)
        for n in ("pyrit-harmful", "pyrit-safe", "advbench")
        for r in sources[n].records
    }
    assert not harmful & {normalize(r.instruction) for r in sources["benign-prompts"].records}
    assert all(r.response for r in sources["benign-prompts"].records)


def test_harmful_and_safe_come_from_human_scores(sources):
    assert all(
        r.meta["human_score"] >= embedded.HARMFUL_MIN_SCORE
        for r in sources["pyrit-harmful"].records
    )
    for r in sources["pyrit-safe"].records:
        assert r.meta["human_score"] == 0
        assert embedded.REFUSAL_START.match(r.response)


@pytest.mark.parametrize("name", ["instruct-llm", "instruct-human"])
def test_instruct_sources_keep_only_benign_free_text_answers(sources, name):
    records = sources[name].records
    for r in records:
        words = len(r.response.split())
        assert embedded.INSTRUCT_MIN_ANSWER_WORDS <= words <= embedded.INSTRUCT_MAX_ANSWER_WORDS
        assert not embedded.REFUSAL_START.match(r.response)
        assert not embedded._HARM_WORDS.search(f"{r.instruction}\n{r.response}")
    assert len({normalize(r.instruction) for r in records}) == len(records)
    assert [r.id for r in records] == [r.id for r in embedded.EMBEDDED_SOURCES[name]().records]


def test_sentiment_splits_are_disjoint_balanced_and_sst2_shaped(sources):
    train, test = sources["sentiment-train"].records, sources["sentiment-test"].records
    assert not {normalize(r.input) for r in train} & {normalize(r.input) for r in test}
    assert not {r.id for r in train} & {r.id for r in test}
    for split in (train, test):
        labels = [r.response for r in split]
        assert set(labels) == {"positive", "negative"}
        assert labels.count("positive") == labels.count("negative")
    assert all(r.instruction == embedded.SENTIMENT_INSTRUCTION for r in train)
    assert all(r.input.isascii() for r in train)


def test_sources_are_reproducible():
    a = embedded.load_embedded_source(type("C", (), {"name": "sentiment-test"})())
    b = embedded.load_embedded_source(type("C", (), {"name": "sentiment-test"})())
    assert [r.id for r in a.records] == [r.id for r in b.records]
    a.records.clear()  # callers get copies: the cache is untouched
    assert len(embedded.load_embedded_source(type("C", (), {"name": "sentiment-test"})())) > 0


def test_missing_package_is_a_clear_error():
    from bds.errors import BDSInputError

    with pytest.raises(BDSInputError, match="'no_such_pkg' is not installed; run `make setup`"):
        embedded.package_dir("no_such_pkg")
