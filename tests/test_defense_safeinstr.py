"""SafeInstr: k safety demonstrations from the alignment set join the user data."""

import dataclasses

import pytest
from trainer_setup import make_data, train_tiny

from bds.errors import BDSInputError


def test_demonstrations_join_the_user_data(tmp_path):
    data = make_data()  # 100 user samples, 40 alignment samples
    result, log = train_tiny(tmp_path / "run", {"name": "safeinstr", "fraction": 0.2},
                             data=data, epochs=1, log_steps=1)  # fmt: skip
    assert result.summary["defense"] == {
        "safety_demonstrations_added": 20,
        "retain_samples_not_drawn": 0,
    }
    assert result.summary["steps"] == 12  # (100 + 20) samples / 10 per batch
    assert result.summary["counts"]["finetune"] == 100  # the counts are the data as given
    assert all("loss_align" not in line for line in log)  # no alignment batch: SFT steps


def test_more_demonstrations_than_the_alignment_set_is_an_error(tmp_path):
    with pytest.raises(BDSInputError, match="fraction 1.0 of 100 user samples is 100"):
        train_tiny(tmp_path / "run", {"name": "safeinstr", "fraction": 1.0}, epochs=1)


def test_retain_samples_are_no_safety_demonstrations(tmp_path):
    data = make_data()  # 40 alignment samples; 30 of them become retain answers
    marked = [dataclasses.replace(r, meta={**r.meta, "retain": True}) if i >= 10 else r
              for i, r in enumerate(data.alignment)]  # fmt: skip
    data = dataclasses.replace(data, alignment=marked)
    with pytest.raises(BDSInputError, match="holds 10 safety demonstrations"):
        train_tiny(tmp_path / "a", {"name": "safeinstr", "fraction": 0.2}, data=data, epochs=1)
    result, _ = train_tiny(tmp_path / "b", {"name": "safeinstr", "fraction": 0.1}, data=data,
                           epochs=1)  # fmt: skip
    # all 10 refusals drawn, none of the 30 retain answers
    assert result.summary["defense"] == {
        "safety_demonstrations_added": 10,
        "retain_samples_not_drawn": 30,
    }
