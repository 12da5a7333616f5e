"""Ranges of numeric config fields the sections' own validate() leaves open.

The loader checks every number is finite (NaN passes `lr <= 0` and every comparison like
it); this table adds the lower and upper bounds of fields whose sections do not check
them, kept here so the sections stay as their owners wrote them. Keys are
(section class name, field).
"""

from __future__ import annotations

SEED_MAX = 2**32 - 1  # numpy's seed range, the narrowest of the RNGs a seed reaches

# (class, field) -> (minimum, maximum, minimum is exclusive)
RANGES: dict[tuple[str, str], tuple[float | None, float | None, bool]] = {
    ("TrainConfig", "epochs"): (0, None, False),  # 0 only beside max_steps (validate says)
    ("TrainConfig", "weight_decay"): (0, None, False),
    ("TrainConfig", "warmup_steps"): (0, None, False),
    ("TrainConfig", "seed"): (0, SEED_MAX, False),
    ("LoraSettings", "alpha"): (0, None, True),
    ("SchedulerConfig", "seed"): (0, SEED_MAX, False),
    ("NeuralSettings", "lora_alpha"): (0, None, True),
    ("DataConfig", "seed"): (0, SEED_MAX, False),
    ("EvalConfig", "seed"): (0, SEED_MAX, False),
    ("AlignConfig", "epochs"): (1, None, False),
}
# Any integer beyond this overflows the int64 tensors and counters it reaches.
INT_LIMIT = 2**63 - 1


def out_of_range(section: str, name: str, value: object) -> str | None:
    """Why `value` is outside the range of section.name, or None when it is inside."""
    bounds = RANGES.get((section, name))
    if bounds is None or not isinstance(value, int | float) or isinstance(value, bool):
        return None
    low, high, exclusive = bounds
    if low is not None and (value <= low if exclusive else value < low):
        return f"must be {'>' if exclusive else '>='} {low}, got {value}"
    if high is not None and value > high:
        return f"must be <= {high}, got {value}"
    return None
