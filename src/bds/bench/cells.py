"""The grid's cells: their run configs, their evaluation sets and their estimated cost."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bds.bench.config import ATTACK_AFTER_ALIGNMENT_DEFENSE, EvalSetConfig, GridConfig
from bds.config import RunConfig
from bds.errors import BDSInputError, ConfigError, FieldError

FA = "finetune_accuracy"


@dataclass(frozen=True)
class Cell:
    """One attack run + its evaluation: a defense on a task at harmful ratio p, one seed."""

    task: str
    p: float
    defense: str
    seed: int

    @property
    def id(self) -> str:
        return f"{self.task}/p={self.p:g}/{self.defense}/seed={self.seed}"

    def folder(self, out: Path) -> Path:
        return out / "cells" / self.task / f"p={self.p:g}" / self.defense / f"seed={self.seed}"


class Grid:
    """A loaded grid: its cells, their run configs (each checked when the grid loads, so a
    bad override fails before any work) and the task configs alignment runs from."""

    def __init__(self, cfg: GridConfig, path: Path):
        from bds.bench.config import alignment_defenses
        from bds.defenses.registry import default_settings

        self.cfg = cfg
        self.path = path
        self._alignment_defenses = frozenset(alignment_defenses())  # read the registry once
        self.cells = [
            Cell(task, p, defense, seed)
            for task in cfg.tasks
            for p in cfg.harmful_ratios
            for defense in cfg.defense_names()
            for seed in cfg.seeds
        ]
        for name in cfg.defense_settings:  # checked even where no cell runs it
            self._settings(name, default_settings(name))
        self._task_cfgs = {task: self._load(task, []) for task in cfg.tasks}
        self._configs: dict[Cell, RunConfig] = {}
        self._loaded: dict[tuple, RunConfig] = {}  # (task, p, seed): the defenses share it
        for cell in self.cells:
            self._configs[cell] = self._cell_config(cell)

    def base_path(self, task: str) -> Path:
        name = self.cfg.tasks[task].base or self.cfg.base
        path = Path(name)
        return path if path.is_absolute() else self.path.parent / path

    def _load(self, task: str, extra: list[str]) -> RunConfig:
        from bds.config import load_config

        overrides = self.cfg.overrides + self.cfg.tasks[task].overrides + extra
        try:
            return load_config(self.base_path(task), overrides=overrides)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: task {task}: {exc}") from None

    def _cell_config(self, cell: Cell) -> RunConfig:
        key = (cell.task, cell.p, cell.seed)
        if key not in self._loaded:
            seeds = [f"data.seed={cell.seed}", f"train.seed={cell.seed}"]
            self._loaded[key] = self._load(cell.task, [f"data.harmful_ratio={cell.p}", *seeds])
        return self._with_defense(self._loaded[key], cell.defense, f"cell {cell.id}")

    def _with_defense(self, loaded: RunConfig, name: str, where: str) -> RunConfig:
        """`loaded` defended by `name`: its attack's defense, or for an alignment-stage one
        its alignment's (the attack then plain SFT)."""
        cfg = copy.deepcopy(loaded)
        field = "defense"
        if self.is_alignment_defense(name):
            field = "align.defense"
            cfg.align.defense = self._settings(name, cfg.align.defense)
            name = ATTACK_AFTER_ALIGNMENT_DEFENSE
        cfg.defense = self._settings(name, cfg.defense)
        try:
            getattr(cfg.align.defense, "validate", lambda: None)()
            getattr(cfg.defense, "validate", lambda: None)()
            cfg.validate()
        except FieldError as exc:
            raise BDSInputError(f"{self.path}: {where}: {field}.{exc.key}: {exc}") from None
        return cfg

    def _settings(self, name: str, configured: Any) -> Any:
        """Defense `name`'s settings (bds/defenses/registry.py `settings_for`), with the
        grid's `defense_settings` for it on top."""
        from bds.config import from_dict
        from bds.defenses.registry import settings_class, settings_for
        from bds.io import to_jsonable

        settings = settings_for(name, configured)
        own = self.cfg.defense_settings.get(name)
        if not own:
            return settings
        data = {**to_jsonable(settings), **own, "name": name}
        return from_dict(settings_class(name), data, source=f"{self.path}: defense_settings.{name}")

    def is_alignment_defense(self, name: str) -> bool:
        return name in self._alignment_defenses

    def align_label(self, cell: Cell) -> str:
        """Which aligned model the cell attacks: its task's, or for an alignment-stage
        defense `<task>/<defense>` (that defense's aligned model)."""
        return (
            f"{cell.task}/{cell.defense}" if self.is_alignment_defense(cell.defense) else cell.task
        )

    @staticmethod
    def label_task(label: str) -> str:
        """The task an aligned model's label (align_label) belongs to."""
        return label.partition("/")[0]

    def align_labels(self) -> list[str]:
        return list(dict.fromkeys(self.align_label(c) for c in self.cells))

    def aligned_config(self, label: str) -> RunConfig:
        """The config aligned model `label` is built (and evaluated before the attack) with:
        its task's config before any cell's ratio or seed (one aligned model per task and
        alignment defense, shared by every cell, as the paper's models arrive)."""
        task, _, defense = label.partition("/")
        if not defense:
            return copy.deepcopy(self._task_cfgs[task])
        return self._with_defense(self._task_cfgs[task], defense, f"task {task}")

    def config(self, cell: Cell) -> RunConfig:
        return copy.deepcopy(self._configs[cell])

    def task_config(self, task: str) -> RunConfig:
        """The task's config before any cell's ratio or seed."""
        return copy.deepcopy(self._task_cfgs[task])

    def eval_sets(self, task: str, split: str) -> dict[str, EvalSetConfig]:
        """The split's slices of the metrics this task's config evaluates."""
        metrics = self._task_cfgs[task].eval.metrics
        return {m: s for m, s in self.cfg.split(task, split).items() if m in metrics}


# ---------------------------------------------------------------- cost --------------------


def train_steps(cfg: RunConfig) -> int:
    return math.ceil(cfg.data.n / cfg.train.batch_size) * cfg.train.epochs


def eval_seconds(cfg: RunConfig, items: dict[str, int], rates: Any) -> float:
    """Generation (every answer at max_new_tokens: an upper bound) and judging."""
    ev = cfg.eval
    tokens = {
        "harmful_score": ev.harmful_score.max_new_tokens,
        FA: ev.finetune_accuracy.max_new_tokens,
        "over_refusal": ev.over_refusal.max_new_tokens,
    }
    total = 0.0
    for metric, n in items.items():
        total += math.ceil(n / ev.batch_size) * tokens[metric] * rates.decode_step_seconds
        if metric != FA:
            total += n * rates.judge_item_seconds
    return total


def cell_cost(cfg: RunConfig, items: dict[str, int], rates: Any) -> dict[str, float]:
    """Estimated seconds of a cell's attack and its evaluation (`items`: prompts per metric,
    over every split it is evaluated on)."""
    factor = 1.0
    if cfg.defense.alignment_batch:  # a second forward/backward on an alignment batch
        factor += cfg.train.alignment_batch_size / cfg.train.batch_size
    train = train_steps(cfg) * factor * rates.train_step_seconds
    return {"train": train, "eval": eval_seconds(cfg, items, rates)}


def align_cost(cfg: RunConfig, n_alignment: int, n_retain: int, rates: Any) -> float:
    """Estimated seconds to build an aligned model: the retain answers and the alignment
    training (an alignment-stage defense's steps at its `alignment_step_factors`)."""
    epochs = cfg.align.epochs or cfg.train.epochs
    steps = math.ceil((n_alignment + n_retain) / cfg.train.batch_size) * epochs
    factor = rates.alignment_step_factors.get(cfg.align.defense.name, 1.0)
    batches = math.ceil(n_retain / cfg.eval.batch_size)
    decode = batches * cfg.align.retain_max_new_tokens * rates.decode_step_seconds
    return steps * factor * rates.train_step_seconds + decode
