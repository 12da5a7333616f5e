"""The bench grid: which cells to run (defenses x harmful ratios x tasks x seeds), on which
evaluation splits, and the rates its cost estimate uses.

A grid file may `extends` another (load_grid): that grid with the file's keys merged over it.

A cell's run config is a base run config (`base`, or the task's own) with overrides, in the
order: the grid's `overrides`, the task's, then the cell's own (`data.harmful_ratio`,
`data.seed`, `train.seed`), all through bds/overrides.py, so each is checked exactly as the
same key in a run config would be; the cell's defense is then set as `bds demo` sets a
method's (bds/defenses/registry.py `settings_for`).

Evaluation splits: `splits.validation` is the one for choosing settings, `splits.test` the
held-out one reported and never tuned on. Each names, per metric, a source and a slice of
it (`skip` records, then `take`); a task may add its own (its fine-tuning accuracy set).
A split evaluates only the metrics it names (and the task's config evaluates).

Defenses at the alignment stage (Vaccine, Booster, RepNoise) are cells too, as the paper
compares them: the provider aligns with the defense, then the user's job is plain SFT. Such
a cell attacks its own aligned model (one per task and defense, shared by its seeds and
ratios, cached like every aligned model) and the bench reports that model before the attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bds.config import SourceConfig
from bds.errors import ConfigError, FieldError
from bds.ranges import SEED_MAX

SplitName = Literal["validation", "test"]
SPLITS: tuple[str, ...] = ("validation", "test")
# `defenses: [all]` expands to every registered defense: those that act on the user's job
# (filter, fine-tuning, repair: the ones `bds demo --methods` accepts), then the
# alignment-stage ones.
ALL_DEFENSES = "all"
# What the user's job is in a cell of an alignment-stage defense: the provider defended
# before the upload, so the upload is fine-tuned as it comes (the paper's protocol).
ATTACK_AFTER_ALIGNMENT_DEFENSE = "sft"


@dataclass
class EvalSetConfig:
    """A slice of a source: its records from `skip` on, at most `take` of them (all if
    omitted). `take` also lets --dry-run count a hub source without downloading it.

    A prompt the task also trains or aligns on is an error, unless `drop_training_overlap`:
    then such prompts are left out (counted in results.json and the report) before the
    slice is cut, so the validation and test slices of one source stay disjoint."""

    source: SourceConfig
    skip: int = 0
    take: int | None = None
    drop_training_overlap: bool = False

    def validate(self) -> None:
        if self.skip < 0:
            raise FieldError("skip", f"must be >= 0, got {self.skip}")
        if self.take is not None and self.take < 1:
            raise FieldError("take", f"must be >= 1 (or omitted for all), got {self.take}")
        if self.source.limit is not None:
            raise FieldError("source.limit", "slice with `skip` and `take` instead of `limit`")


@dataclass
class SplitConfig:
    """One evaluation split: the slice of each metric's prompt set it holds."""

    harmful_score: EvalSetConfig | None = None
    finetune_accuracy: EvalSetConfig | None = None
    over_refusal: EvalSetConfig | None = None
    note: str = ""  # what the split is for and what it is disjoint from, for the report

    def sets(self) -> dict[str, EvalSetConfig]:
        return {
            m: s
            for m in ("harmful_score", "finetune_accuracy", "over_refusal")
            if (s := getattr(self, m)) is not None
        }


@dataclass
class TaskConfig:
    """One fine-tuning task: a base run config (default: the grid's) and overrides."""

    base: str | None = None
    overrides: list[str] = field(default_factory=list)
    splits: dict[str, SplitConfig] = field(default_factory=dict)

    def validate(self) -> None:
        for name in self.splits:
            if name not in SPLITS:
                raise FieldError("splits", f"unknown split {name!r}; name validation or test")


@dataclass
class CostConfig:
    """Rates the cost estimate (--dry-run, the ETA before any cell has run) multiplies.

    train_step_seconds: one optimiser step on `train.batch_size` user samples (a defense that
    also trains on an alignment batch counts its extra share). decode_step_seconds: one
    generated token for a whole eval batch (answers are counted at max_new_tokens: an upper
    bound). judge_item_seconds: judging one answer, all judges together.
    alignment_step_factors: an alignment-stage defense's alignment step over an SFT step
    (1 where not given). `measured`: where the rates come from (a command and a machine),
    or empty: the report then calls them assumed.
    """

    train_step_seconds: float = 1.0
    decode_step_seconds: float = 0.1
    judge_item_seconds: float = 0.01
    alignment_step_factors: dict[str, float] = field(default_factory=dict)
    measured: str = ""

    def validate(self) -> None:
        for name in ("train_step_seconds", "decode_step_seconds", "judge_item_seconds"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"must be >= 0, got {getattr(self, name)}")
        known = alignment_defenses()
        for name, factor in self.alignment_step_factors.items():
            if name not in known:
                raise FieldError(
                    "alignment_step_factors",
                    f"{name!r} is no alignment-stage defense; choose from {', '.join(known)}",
                )
            if factor <= 0:
                raise FieldError("alignment_step_factors", f"{name}: must be > 0, got {factor}")


@dataclass
class GridConfig:
    """A bench grid (see the module docstring).

    base: the run config every task starts from (relative to the grid file). defenses:
    registered names, or `all`. harmful_ratios, seeds: the grid's other axes. overrides:
    KEY=VALUE for every cell. splits / evaluate_on: the evaluation splits and the ones each
    cell is evaluated on. references: the defenses every other one is compared with.
    align: build an aligned model first (false: attack `model` as it is).
    bootstrap_resamples: of each CI. cost: the rates of the cost estimate.
    defense_settings: a defense's own settings in every cell that runs it (name -> mapping,
    checked like `defense:` in a run config), e.g. a CPU-sized RepNoise.
    """

    base: str
    tasks: dict[str, TaskConfig]
    defenses: list[str] = field(default_factory=lambda: [ALL_DEFENSES])
    harmful_ratios: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.5])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    overrides: list[str] = field(default_factory=list)
    splits: dict[str, SplitConfig] = field(default_factory=dict)
    evaluate_on: list[SplitName] = field(default_factory=lambda: ["test"])
    references: list[str] = field(default_factory=lambda: ["sft", "mix", "bds"])
    align: bool = True
    bootstrap_resamples: int = 2000
    cost: CostConfig = field(default_factory=CostConfig)
    defense_settings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.tasks:
            raise FieldError("tasks", "name at least one task")
        for key, values in (("harmful_ratios", self.harmful_ratios), ("seeds", self.seeds)):
            if not values:
                raise FieldError(key, "give at least one value")
            if len(set(values)) != len(values):
                raise FieldError(key, "lists a value twice; name each once")
        for p in self.harmful_ratios:
            if not 0.0 <= p <= 1.0:
                raise FieldError("harmful_ratios", f"must be in [0, 1], got {p}")
        for s in self.seeds:
            if not 0 <= s <= SEED_MAX:
                raise FieldError("seeds", f"must be in [0, {SEED_MAX}], got {s}")
        if not self.defenses or len(set(self.defenses)) != len(self.defenses):
            raise FieldError("defenses", "name each defense once (or `all`)")
        known = cell_defenses()
        for name in self.defenses:
            if name != ALL_DEFENSES and name not in known:
                raise FieldError(
                    "defenses", f"unknown defense {name!r}; choose from {', '.join(known)} or `all`"
                )
        for name in self.splits:
            if name not in SPLITS:
                raise FieldError("splits", f"unknown split {name!r}; name validation or test")
        for name in self.references:
            if name not in known:
                raise FieldError("references", f"unknown defense {name!r}")
        for name in self.defense_settings:
            if name not in known:
                raise FieldError("defense_settings", f"unknown defense {name!r}")
        if not self.evaluate_on:
            raise FieldError("evaluate_on", "name at least one split (test, validation)")
        for name in self.evaluate_on:
            if name not in self.splits:
                raise FieldError("evaluate_on", f"the {name} split is not defined in `splits`")
        if self.bootstrap_resamples < 100:
            raise FieldError(
                "bootstrap_resamples", f"must be >= 100, got {self.bootstrap_resamples}"
            )

    def defense_names(self) -> list[str]:
        """The grid's defenses, `all` expanded from the registry (see ALL_DEFENSES)."""
        if ALL_DEFENSES in self.defenses:
            return cell_defenses()
        return list(self.defenses)

    def split(self, task: str, name: str) -> dict[str, EvalSetConfig]:
        """Metric -> evaluation slice of split `name` for `task` (the task's own win)."""
        sets = self.splits[name].sets() if name in self.splits else {}
        own = self.tasks[task].splits.get(name)
        return {**sets, **(own.sets() if own else {})}

    def split_note(self, name: str) -> str:
        return self.splits[name].note if name in self.splits else ""


def alignment_defenses() -> list[str]:
    """Registered defenses that act at the alignment stage only (registry order)."""
    from bds.defenses.registry import defense_names
    from bds.demo import attack_methods

    attack = set(attack_methods())
    return [n for n in defense_names("alignment") if n not in attack]


def cell_defenses() -> list[str]:
    """Every defense a grid can name: the user's job's ones first, then alignment-stage."""
    from bds.demo import attack_methods

    return attack_methods() + alignment_defenses()


EXTENDS = "extends"  # a grid's parent grid file: its keys, with this file's merged over them


def load_grid(path: str | Path) -> GridConfig:
    """Read and validate a grid file (ConfigError with file:line on any problem), after
    merging it over the grid it `extends` (if any; see grid_data)."""
    from bds.config import from_dict

    data, lines = grid_data(Path(path))
    return from_dict(GridConfig, data, source=str(path), lines=lines)


def grid_data(path: Path, chain: tuple[Path, ...] = ()) -> tuple[Any, dict]:
    """A grid file's data, merged over its parent's when it names one (`extends: FILE`,
    relative to it): mappings merge key by key (so `defense_settings.bds` may add one
    setting), a list or a value replaces the parent's. The parent's paths (`base`, a task's
    `base`) are rebased to this file's folder; its keys' lines name the parent's file."""
    from bds.config import read_yaml

    data, lines = read_yaml(path)
    if not isinstance(data, dict) or EXTENDS not in data:
        return data, lines
    name = data.pop(EXTENDS)
    where = f"{path}:{lines.get((EXTENDS,))}: {EXTENDS}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name one grid file (relative to this one), e.g. demo-protocol.yaml")  # fmt: skip
    parent = Path(name) if Path(name).is_absolute() else path.parent / name
    here = path.resolve()
    if parent.resolve() in (*chain, here):
        raise ConfigError(
            f"{where}: {name} is already in this chain of grids (a cycle); extend another grid"
        )
    if not parent.is_file():
        raise ConfigError(f"{where}: no grid file {parent}; name an existing one, e.g. demo-protocol.yaml")  # fmt: skip
    inherited, parent_lines = grid_data(parent, (*chain, here))
    if not isinstance(inherited, dict):
        raise ConfigError(f"{where}: {parent} holds no mapping of grid keys")
    _rebase_paths(inherited, parent.parent, path.parent)
    named = {k: v if isinstance(v, str) else f"{parent}:{v}" for k, v in parent_lines.items()}
    return _merged(inherited, data), {**named, **lines}


def _merged(parent: dict, child: dict) -> dict:
    out = dict(parent)
    for key, value in child.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _rebase_paths(data: dict, was: Path, now: Path) -> None:
    """Relative run-config paths of a grid read from folder `was`, as seen from `now`."""
    import os

    def rebased(name: Any) -> Any:
        if not isinstance(name, str) or Path(name).is_absolute():
            return name
        return os.path.relpath(os.path.normpath(was / name), now)

    if "base" in data:
        data["base"] = rebased(data["base"])
    for task in (data.get("tasks") or {}).values():
        if isinstance(task, dict) and "base" in task:
            task["base"] = rebased(task["base"])
