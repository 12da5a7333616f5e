"""Oracle-label filter: the samples labelled harmful never reach training."""

import dataclasses

import pytest
from trainer_setup import make_data, train_tiny

from bds.errors import BDSInputError


def test_the_harmful_samples_are_dropped(tmp_path):
    result, log = train_tiny(tmp_path / "run", "oracle-filter", epochs=1, log_steps=1)
    assert result.summary["defense"] == {"dropped_harmful": 20, "kept": 80}
    assert result.summary["steps"] == 8
    assert all("loss_harmful" not in line and "loss_benign" in line for line in log)


def test_unlabelled_data_is_an_error(tmp_path):
    data = make_data()
    data.finetune[3] = dataclasses.replace(data.finetune[3], source="unknown")
    with pytest.raises(BDSInputError, match="1 carry none"):
        train_tiny(tmp_path / "run", "oracle-filter", data=data, epochs=1)
