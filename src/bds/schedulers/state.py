"""Checks a scheduler runs before it loads a checkpoint: same kind, same number of samples."""

from __future__ import annotations

from bds.errors import BDSInputError


def check_checkpoint(same_kind: bool, saved_samples: int, samples: int) -> None:
    """One sentence instead of a traceback when a run folder's checkpoint does not fit."""
    if not same_kind:
        raise BDSInputError(
            "the checkpoint holds another scheduler (its kind or neural.train differs from this "
            "run's); resume with the same config or give a new --output"
        )
    if saved_samples != samples:
        raise BDSInputError(
            f"the checkpoint's scheduler holds {saved_samples} samples, this run's data "
            f"{samples}; resume with the same data or give a new --output"
        )
