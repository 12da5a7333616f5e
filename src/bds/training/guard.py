"""Stops that leave a run resumable: a non-finite loss or weight, and Ctrl-C.

A NaN loss (a diverging run, lr too high) otherwise trains on: every weight turns NaN,
and the adapter and an all-NaN weights.csv are written as if all went well. The guard
stops at the first non-finite number, before it reaches a checkpoint, so the checkpoints
on disk stay good. Ctrl-C is taken at the end of the step in progress, where a checkpoint
is exact; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import Any

from bds.errors import BDSInputError
from bds.training.checkpoint import latest_checkpoint


def check_finite(
    step: int,
    stats: dict[str, float],
    weights: Any,
    output_dir: Path,
    before_raise: Any = None,
) -> None:
    """BDSInputError naming the step and the first non-finite number, and what is kept.

    before_raise: called first (closes a progress bar, so the sentence starts a line)."""
    bad = next(((k, v) for k, v in stats.items() if not math.isfinite(v)), None)
    if bad is None and weights is not None:
        import torch

        w = torch.as_tensor(weights)
        if not bool(torch.isfinite(w).all()):
            bad = ("a sample weight", float(w[~torch.isfinite(w)][0]))
    if bad is None:
        return
    if before_raise is not None:
        before_raise()
    last = latest_checkpoint(output_dir)
    kept = (
        f"the last good checkpoint ({last.name}) is kept"
        if last is not None
        else "no checkpoint was saved before it"
    )
    raise BDSInputError(
        f"training stopped at step {step}: {bad[0]} is {bad[1]} (the run diverged) and "
        f"{kept}; lower train.lr or defense.scheduler.lr and run in a new --output folder"
    )


class InterruptAtStepEnd:
    """Within `with`, once `armed` (the training loop runs): the first Ctrl-C sets
    `requested` (the loop stops after its step), a second raises KeyboardInterrupt at once.
    Unarmed (loading data and model) Ctrl-C stops at once. Off the main thread: inert."""

    def __init__(self) -> None:
        self.armed = False
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested or not self.armed:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

    def __enter__(self) -> InterruptAtStepEnd:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: signals stay as they are
            self._previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
