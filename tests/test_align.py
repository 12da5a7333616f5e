"""The alignment stage's retain set: composed requests, self-distilled answers, cache key."""

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import make_records

from bds.align import align_stage, answer_retain_requests, clean_answer, retain_requests
from bds.config import load_config
from bds.data.pipeline import prepare_data
from bds.data.schema import Record
from bds.eval.generate import Generation
from bds.tiny import save_tiny_checkpoint


@pytest.mark.parametrize(
    "text, hit_limit, expected, cut",
    [
        ("A full answer. It ends here.", False, "A full answer. It ends here.", False),
        ("One sentence. Then a cut-off sen", True, "One sentence.", True),
        ("Answer.\n\n### Response:\nAnswer again", False, "Answer.", True),
        ("no sentence end at all and the limit", True, "", True),
        ("  Short answer without stop  ", False, "Short answer without stop", False),
    ],
)
def test_clean_answer(text, hit_limit, expected, cut):
    assert clean_answer(text, hit_limit) == (expected, cut)


def test_everyday_prompts_are_fixed_and_apart_from_the_over_refusal_set():
    pytest.importorskip("pyrit", reason="embedded data packages not installed")
    from bds.data.embedded import benign_prompts
    from bds.data.everyday import NEAR_EVAL_JACCARD, everyday_prompts
    from bds.data.text import jaccard, word_set

    first, second = everyday_prompts(), everyday_prompts()
    assert [r.instruction for r in first.records] == [r.instruction for r in second.records]
    assert len(first.records) == 140
    assert len({r.instruction for r in first.records}) == 140
    assert all(r.response == "" and r.source == "benign" for r in first.records)
    held_out = [word_set(r.instruction) for r in benign_prompts().records]
    for record in first.records:
        words = word_set(record.instruction)
        assert max(jaccard(words, h) for h in held_out) < NEAR_EVAL_JACCARD


@pytest.fixture
def align_config(tmp_path, monkeypatch):
    monkeypatch.setenv("BDS_CACHE", str(tmp_path / "cache"))
    model = save_tiny_checkpoint(tmp_path / "tiny-model")
    safe = [
        Record(id=f"s/{i}", instruction=f"harmful {i}", response="I can't.", source="safe")
        for i in range(8)
    ]
    requests = [
        Record(id=f"r/{i}", instruction=f"benign request {i}", response=f"given {i}")
        for i in range(5)
    ]

    def write(name, recs):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in recs))
        return {"kind": "local", "path": str(path)}

    cfg = {
        "model": {"name": str(model)},
        "data": {
            "benign": write("benign", make_records(10, "benign")),
            "alignment": write("safe", safe),
            "n": 8,
            "harmful_ratio": 0.0,
            "max_length": 48,
        },
        "train": {"epochs": 1, "batch_size": 4, "log_steps": 1},
        "align": {"retain": write("retain", requests)},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def fake_generate(calls):
    """A stand-in for generation: answers that show how each is cleaned."""

    def generate(model, tokenizer, records, template, max_new_tokens, **_):
        calls.append((template, max_new_tokens, len(records)))
        outputs = [
            ("Here is an answer. More", True),
            ("A whole answer.", False),
            ("no stop at all", True),
            ("Fine.\n### Instruction:\nnext", False),
            ("Plain answer", False),
        ]
        return [
            Generation(r.id, "", text, max_new_tokens if hit else 3, hit)
            for r, (text, hit) in zip(records, outputs, strict=False)
        ]

    return generate


def test_retain_answers_come_from_the_base_model_cleaned_and_counted(align_config, monkeypatch):
    calls = []
    monkeypatch.setattr("bds.eval.generate.generate", fake_generate(calls))
    requests = retain_requests(align_config)
    assert [r.response for r in requests] == [""] * 5  # the file's answers are not used
    kept, notes = answer_retain_requests(align_config, requests, log=lambda *_: None)
    assert calls == [("chat", 80, 5)]
    assert [r.response for r in kept] == [
        "Here is an answer.",
        "A whole answer.",
        "Fine.",
        "Plain answer",
    ]
    assert "3 of 5 answers cut back" in notes[0] and "1 empty answers left out" in notes[1]


def test_retain_given_answers_are_used_as_they_are(align_config):
    align_config.align.retain_answers = "given"
    kept, notes = answer_retain_requests(align_config, retain_requests(align_config))
    assert [r.response for r in kept] == [f"given {i}" for i in range(5)] and notes == []


def test_align_stage_trains_on_the_retain_set_and_caches_by_it(align_config, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("bds.eval.generate.generate", fake_generate(calls))
    data = prepare_data(align_config.data)
    logs = []
    folder = align_stage(align_config, data, logs.append)
    info = json.loads((folder / "bds_alignment.json").read_text())
    assert info["n_alignment"] == 8 and info["n_retain"] == 4
    saved = [json.loads(line) for line in (folder / "retain.jsonl").read_text().splitlines()]
    assert [s["response"] for s in saved][:2] == ["Here is an answer.", "A whole answer."]
    assert any("+ 4 retain samples" in m for m in logs)
    # Cached: a second call generates nothing and trains nothing.
    assert align_stage(align_config, data, logs.append) == folder
    assert len(calls) == 1 and "reusing" in logs[-1]
    # Without the retain set the model is another one (its own key).
    align_config.align.retain = None
    assert align_stage(align_config, data, logs.append) != folder
    assert len(calls) == 1


def test_attack_alignment_set_takes_the_retain_samples_when_asked(
    align_config, tmp_path, monkeypatch
):
    from bds.demo import attack_stage

    aligned = tmp_path / "aligned"
    aligned.mkdir()
    retain = [
        Record(f"everyday/{i}", f"request {i}", f"answer {i}", source="benign") for i in range(3)
    ]
    (aligned / "retain.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in retain))
    seen = {}

    def fake_train(cfg, run_dir, data):
        seen[cfg.defense.name] = data.alignment

    monkeypatch.setattr("bds.training.trainer.train", fake_train)
    data = prepare_data(align_config.data)
    attack_stage(align_config, data, aligned, "bds", tmp_path / "off", lambda *_: None)
    assert seen["bds"] == data.alignment  # default: D_safe alone, as in the paper
    align_config.align.retain_in_alignment_set = True
    for method in ("bds", "mix", "sft"):
        attack_stage(align_config, data, aligned, method, tmp_path / "on", lambda *_: None)
    assert (
        seen["bds"]
        == seen["mix"]
        == list(data.alignment) + [dataclasses.replace(r, source="safe") for r in retain]
    )
    assert seen["sft"] == data.alignment  # plain SFT trains on no alignment set anyway
    # the retain samples are marked (SafeInstr draws safety demonstrations from D_safe only)
    assert [bool(r.meta.get("retain")) for r in seen["bds"]] == [False] * len(data.alignment) + [
        True
    ] * len(retain)


def test_an_interrupted_alignment_resumes_from_its_journal_and_checkpoint(
    align_config, monkeypatch
):
    """Killed mid-SFT: the retain answers are not generated again and the SFT resumes
    from its latest checkpoint; the finished model leaves no work folder behind."""
    import transformers

    import bds.align as align_mod
    import bds.training.trainer as trainer_mod

    align_config.align.retain_max_new_tokens = 4  # real generation on the tiny model
    monkeypatch.setattr(align_mod, "ALIGN_SAVE_STEPS", 1)
    real_train, runs = trainer_mod.train, []

    def train_killed_after_step_1_once(cfg, out, **kw):
        runs.append(real_train(cfg, out, until_step=1 if not runs else None, **kw))
        if len(runs) == 1:
            raise KeyboardInterrupt
        return runs[-1]

    monkeypatch.setattr(trainer_mod, "train", train_killed_after_step_1_once)
    data = prepare_data(align_config.data)
    with pytest.raises(KeyboardInterrupt):
        align_stage(align_config, data, lambda *_: None)
    cache = Path(os.environ["BDS_CACHE"]) / "aligned"
    (work,) = cache.glob("*.work")
    assert (work / "retain-journal.jsonl").is_file() and (work / "sft" / "checkpoints").is_dir()

    def no_generation(*_, **__):
        raise AssertionError("the journal holds every retain answer")

    monkeypatch.setattr(transformers.GenerationMixin, "generate", no_generation)
    folder = align_stage(align_config, data, lambda *_: None)
    assert runs[-1].summary["resumed_from_step"] == 1
    assert (folder / "config.json").is_file() and not list(cache.glob("*.work"))
