"""Guard filter: the user samples a guard flags never reach training, and are counted."""

import pytest
from test_eval_judges import guard_folder
from trainer_setup import train_tiny

from bds.defenses import guard_filter
from bds.errors import BDSInputError
from bds.eval.judges.base import Verdict


class StubGuard:
    """Flags requests about attacks (the tiny task's harmful samples) and one benign
    request (twice in D_ft); answers another (also twice) with neither word."""

    closed = False

    def __init__(self, flag=lambda request: "attack" in request or "apple apple" in request,
                 unparsed="river river"):  # fmt: skip
        self.flag, self.unparsed = flag, unparsed
        self.seen: list[tuple[str, str]] = []

    def judge(self, prompts, answers):
        self.seen += list(zip(prompts, answers, strict=True))
        return [
            Verdict(harmful=False, detail={"unparsed": True}) if self.unparsed and self.unparsed in p
            else Verdict(harmful=self.flag(p))
            for p in prompts
        ]  # fmt: skip

    def protocol(self):
        return {"name": "stub"}

    def close(self):
        StubGuard.closed = True


def test_flagged_samples_are_dropped_and_counted_per_source(tmp_path, monkeypatch):
    stub = StubGuard()
    monkeypatch.setattr(guard_filter, "load_guard", lambda settings: stub)
    result, log = train_tiny(tmp_path / "run", "guard-filter", epochs=1, log_steps=1)
    summary = result.summary["defense"]
    assert len(stub.seen) == 100 and StubGuard.closed  # every user sample, then unloaded
    assert stub.seen[0][1]  # the guard reads the answer too
    assert summary["by_source"] == {
        "kept": {"benign": 78},
        "dropped": {"harmful": 20, "benign": 2},
        "unparsed_kept": 2,
    }
    assert summary["kept"] == 78 and summary["dropped"] == 22
    assert len(summary["dropped_ids"]) == 22 and summary["seconds"]["per_sample"] >= 0
    assert result.summary["steps"] == 8  # ceil(78 / 10)
    assert all("loss_harmful" not in line for line in log)


def test_a_guard_flagging_everything_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(guard_filter, "load_guard", lambda s: StubGuard(lambda p: True, None))
    with pytest.raises(BDSInputError, match="flags all 100 user samples"):
        train_tiny(tmp_path / "run", "guard-filter", epochs=1)


def test_the_llama_guard_judge_scores_the_user_data(tmp_path):
    # a random tiny Llama Guard: its outputs are noise, read as neither safe nor unsafe,
    # so every sample is kept and counted as unparsed
    folder, _ = guard_folder(tmp_path, structured=False)
    settings = {"name": "guard-filter", "model": str(folder), "batch_size": 50}
    result, _ = train_tiny(tmp_path / "run", settings, max_steps=1)
    summary = result.summary["defense"]
    assert summary["guard"]["name"] == "llama-guard"
    assert summary["guard"]["model"] == str(folder)
    assert summary["by_source"]["unparsed_kept"] == summary["kept"] == 100
