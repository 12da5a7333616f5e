"""SafeInstr: k safety demonstrations from the alignment set join the user data."""

import pytest
from trainer_setup import make_data, train_tiny

from bds.errors import BDSInputError


def test_demonstrations_join_the_user_data(tmp_path):
    data = make_data()  # 100 user samples, 40 alignment samples
    result, log = train_tiny(tmp_path / "run", {"name": "safeinstr", "fraction": 0.2},
                             data=data, epochs=1, log_steps=1)  # fmt: skip
    assert result.summary["defense"] == {"safety_demonstrations_added": 20}
    assert result.summary["steps"] == 12  # (100 + 20) samples / 10 per batch
    assert result.summary["counts"]["finetune"] == 100  # the counts are the data as given
    assert all("loss_align" not in line for line in log)  # no alignment batch: SFT steps


def test_more_demonstrations_than_the_alignment_set_is_an_error(tmp_path):
    with pytest.raises(BDSInputError, match="fraction 1.0 of 100 user samples is 100"):
        train_tiny(tmp_path / "run", {"name": "safeinstr", "fraction": 1.0}, epochs=1)
