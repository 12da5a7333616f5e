"""BDS, the Bayesian Data Scheduler (Hu et al., NeurIPS 2025): a learned weight per user sample.

Each step: read the user batch's weights w_i from the scheduler (without gradient), update
the model on  mean CE(alignment batch) + mean_i(w_i * l_i(user)), then update the scheduler
on each sample's drive (its loss; the conflict drive: how much the alignment updates
raise it, bds/training/conflict.py; or the evidence drive: how much the alignment stage
taught the model to refuse its prompt, bds/training/evidence.py), gathered from all ranks
so every rank applies the same update and holds the same weights. Reference code: the BDS
authors'; where it departs from the paper see docs/training.md and docs/lab_notes.md.

Presets (the same hooks, other defaults): `bds` (scalar scheduler), `bds-neural` (the
amortized neural scheduler), `bds-no-align` (no alignment batch: weights only).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from bds.defenses.base import Defense, StepBatch
from bds.defenses.registry import Data, DefenseSettings, Stage
from bds.errors import FieldError
from bds.schedulers.config import SchedulerConfig

REFERENCE_ADAPTER = "reference"  # theta_ref of the safety-agnostic term


@dataclass
class BDSSettings(DefenseSettings):
    """alignment: draw an alignment batch each step (false: the bds-no-align ablation).
    alignment_weight: lambda, the factor on the alignment batch's mean CE (as Mix's); the
    `mix` control run from these settings (bds demo --methods, bds bench) takes the same
    lambda, so BDS minus Mix stays the scheduler's effect alone.
    scheduler: the data scheduler (kind scalar or neural, transform, lr, priors...).
    drive: what the scheduler weighs each user sample by (training/conflict.py derives
    both): loss: its current loss (the reference code); conflict: how much the alignment
    updates have raised it, the first-order form of the posterior's l_i - l_i(theta_ref);
    evidence: how much the alignment stage raised the probability of refusing its prompt
    (training/evidence.py; measured once, before the first step).
    evidence_base: the model the fine-tuned one was aligned from (drive evidence); by
    default the one its bds alignment stage recorded. evidence_openings: the refusal
    openings scored; by default the evidence_count commonest of the alignment set's.
    evidence_presolve: the evidence does not depend on the model being trained, so the
    scheduler runs its updates on it (as many as the run has steps, on the run's own user
    batches) before the first step, and the weights act from the first step; without it
    the first epoch trains as Mix does, as with the other drives.
    conflict_window: the alignment direction each visit is measured against: the mean
    over about the last epoch of steps (epoch), or this step's alignment batch (step).
    safety_agnostic: drive by l_i - l_i(theta_ref), theta_ref a twin adapter fitted to
    the user data alone; reference_weights: theta_ref's objective, the scheduler-weighted
    user batch or the plain one (uniform). scheduler_losses: the drive's losses before
    this step's update (current) or after it (updated).
    warm_start: a previous run's folder (or its weights.csv): the scalar scheduler starts
    from its logits, matched by sample id, so the weights act from the first step. Without
    it every weight starts at 1 and a sample is weighed only from its second visit, so the
    first epoch trains as Mix does; two passes (a first run learns the weights, the second
    trains from the aligned model with them) close that gap.
    max_weight: the most weight a user sample's loss gets in the model's objective (none: no
    cap). The scheduler's softmax keeps the weights' sum at N, so what it takes from the
    samples it distrusts it gives to the others, which then train at a higher effective lr;
    1.0 lets the scheduler only take weight away. The posterior (weights.csv) is unchanged:
    the cap applies where the weights meet the loss.
    shuffle_weights: an ablation, the control for the scheduler's choice of samples: each
    step's weights (after the cap) go to the batch's samples in a random order, so every
    step trains with the same total user weight as BDS but no sample is singled out. BDS
    minus this isolates which samples lose weight from how much user weight is removed.
    """

    stages: ClassVar[tuple[Stage, ...]] = ("fine-tuning",)
    name: str = "bds"
    alignment: bool = True
    alignment_weight: float = 1.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    drive: Literal["loss", "conflict", "evidence"] = "loss"
    evidence_base: str | None = None
    evidence_openings: list[str] | None = None
    evidence_count: int = 5
    evidence_presolve: bool = True
    conflict_window: Literal["epoch", "step"] = "epoch"
    safety_agnostic: bool = False
    reference_weights: Literal["scheduler", "uniform"] = "scheduler"
    scheduler_losses: Literal["current", "updated"] = "current"
    warm_start: str | None = None
    max_weight: float | None = None
    shuffle_weights: bool = False

    @property
    def needs(self) -> frozenset[Data]:  # type: ignore[override]
        return frozenset({"user", "alignment"} if self.alignment else {"user"})

    def validate(self) -> None:
        from bds.defenses.mix import check_alignment_weight

        check_alignment_weight(self.alignment_weight)
        if self.max_weight is not None and not self.max_weight > 0:
            raise FieldError("max_weight", f"{self.max_weight} must be above 0 (or none: no cap)")
        if self.evidence_count < 1:
            raise FieldError("evidence_count", f"{self.evidence_count} must be at least 1")
        if self.warm_start and self.scheduler.kind != "scalar":
            raise FieldError(
                "warm_start",
                "starts the scalar scheduler's logits; the neural scheduler starts from a "
                "saved scheduler folder: use scheduler.neural.init_from",
            )
        if self.drive == "loss":
            return
        for key, bad, why in (
            ("safety_agnostic", True, f"the {self.drive} drive reads no l_i(theta_ref)"),
            ("scheduler_losses", "updated", f"the {self.drive} drive reads no losses"),
        ):
            if getattr(self, key) == bad:
                raise FieldError(key, f"{bad} does not apply with drive: {self.drive} ({why})")
        if self.drive == "conflict" and not self.alignment:
            raise FieldError(
                "drive",
                f"conflict measures each sample against the alignment batch; {self.name} "
                "has no alignment batch: use bds, or drive loss or evidence",
            )

    def check_run(self, cfg: Any) -> None:
        """Settings of other sections this one depends on."""
        if self.drive == "conflict" and not cfg.train.one_pass:
            raise FieldError(
                "train.one_pass",
                "False does not apply with defense.drive: conflict (the conflict drive "
                "reads both batches from one pass)",
            )

    def variant(self, name: str) -> DefenseSettings | None:
        preset = PRESETS.get(name)
        if name == "mix":  # the control: the same alignment batch and lambda, every weight 1
            from bds.defenses.mix import MixSettings

            return MixSettings(alignment_weight=self.alignment_weight)
        if preset is None or name == self.name:
            return super().variant(name)
        out = copy.deepcopy(self)
        out.name, out.alignment, out.scheduler.kind = name, *preset
        if not out.alignment and out.drive == "conflict":
            out.drive = "loss"  # no alignment batch to conflict with
        return out


@dataclass
class BDSNeuralSettings(BDSSettings):
    """BDS with the amortized neural scheduler (scheduler.kind is neural, whatever given)."""

    name: str = "bds-neural"

    def __post_init__(self) -> None:
        self.scheduler.kind = "neural"


@dataclass
class BDSNoAlignSettings(BDSSettings):
    name: str = "bds-no-align"
    alignment: bool = False


# preset -> (alignment batch, scheduler kind)
PRESETS = {
    "bds": (True, "scalar"),
    "bds-neural": (True, "neural"),
    "bds-no-align": (False, "scalar"),
}


class BDS(Defense):
    """The scheduler-weighted step; its scheduler, drive and outputs (weights.csv)."""

    def __init__(self, settings: BDSSettings, run: Any):
        super().__init__(settings, run)
        self.adapters = ("default", REFERENCE_ADAPTER) if settings.safety_agnostic else ("default",)
        self.applied_weight: dict[str, float] = {}  # total weight each source received
        self.trajectory: dict[int, list[float]] = {}
        self.last_weights = None
        self.ref_optimizer = None
        self.probe = None
        self.conflict = None
        self.evidence = None  # e_i per user sample (drive evidence)
        self.evidence_drive = None  # e_i minus its median: what the scheduler reads

    # ---------------------------------------------------------------- set-up ------------

    def before_model(self) -> None:
        from bds.schedulers.factory import build_scheduler
        from bds.training.conflict import ConflictDrive

        run, s = self.run, self.settings
        self.scheduler = build_scheduler(
            s.scheduler, [x.id for x in run.user], run.data.finetune, run.accelerator.device
        )
        if s.drive == "conflict":
            self.conflict = ConflictDrive(len(run.user))
        if s.warm_start:  # a resumed run then loads its own checkpoint over these
            self.scheduler.start_from(_warm_start_logits(Path(s.warm_start), run.user))
            self.trajectory[0] = self.scheduler.all_weights().tolist()
        self.average_from = run.total_steps - s.scheduler.average_last

    def extend_model(self, peft_model: Any, lora_config: Any) -> None:
        if self.settings.safety_agnostic:
            peft_model.add_adapter(REFERENCE_ADAPTER, lora_config)
            _copy_adapter(peft_model, "default", REFERENCE_ADAPTER)
            self.run.activate("default", peft_model)

    def after_model(self) -> None:
        import torch

        run, s = self.run, self.settings
        if s.drive == "conflict":
            from bds.training.conflict import ConflictProbe

            self.probe = ConflictProbe(run.peft_model, horizon=self._conflict_horizon())
        if s.safety_agnostic:
            ref_params = [
                p for n, p in run.peft_model.named_parameters() if f".{REFERENCE_ADAPTER}." in n
            ]
            self.ref_optimizer = torch.optim.AdamW(
                ref_params, lr=run.tc.lr, weight_decay=run.tc.weight_decay
            )
        if s.drive == "evidence":
            self.evidence = self._alignment_evidence()
            # Centred at the median: softmax weights sum to N, so a shift changes nothing
            # there; per-sample transforms (sigmoid) read the sign, so the typical sample
            # keeps weight ~1 and only those with more evidence than it lose weight.
            self.evidence_drive = self.evidence - self.evidence.median()
            if s.evidence_presolve and not s.warm_start:
                self._presolve()

    def _presolve(self) -> None:
        """The scheduler's updates on the evidence, the run's user batches in its order
        (every rank the global batch, as after_step gathers it), before any model step."""
        import torch

        sampler = self.run.user_sampler
        for step in range(self.run.total_steps):
            index = torch.tensor(sampler.global_batch(step), dtype=torch.long)
            self.scheduler.update(index, self.evidence_drive[index])
        self.trajectory[0] = self.scheduler.all_weights().tolist()

    def _alignment_evidence(self) -> Any:
        """e_i for every user sample, at the model fine-tuning starts from (its LoRA is
        still zero) against the pre-alignment model, loaded for this and freed."""
        from bds.models import load_model
        from bds.training.evidence import alignment_evidence, refusal_openings, resolve_base

        run, s = self.run, self.settings
        openings = refusal_openings(run.data.alignment, s.evidence_openings, s.evidence_count)
        self.evidence_openings_used = openings
        base_cfg = copy.deepcopy(run.cfg.model)
        base_cfg.name = resolve_base(s.evidence_base, run.cfg.model.name)
        base = load_model(base_cfg).to(run.accelerator.device).eval()
        records = {r.id: r for r in run.data.finetune}
        kept = [records[sample.id] for sample in run.user]  # the samples tokenizing kept
        model = run.peft_model
        was_training = model.training
        model.eval()
        try:
            evidence = alignment_evidence(
                model, base, kept, openings, run.tokenizer, run.cfg.data.template,
                run.cfg.data.max_length, autocast=run.accelerator.autocast,
            )  # fmt: skip
        finally:
            model.train(was_training)
            del base
        return evidence.float().cpu()

    def _conflict_horizon(self) -> int:
        """Steps the conflict drive averages the alignment direction over."""
        if self.settings.conflict_window == "step":
            return 1
        return math.ceil(len(self.run.user) / self.run.tc.batch_size)

    # ---------------------------------------------------------------- a step ------------

    def batch(self, step: int) -> StepBatch:
        batch = super().batch(step)
        weights = self.scheduler.weights(batch.index)
        if self.settings.max_weight is not None:
            weights = weights.clamp(max=self.settings.max_weight)
        if self.settings.shuffle_weights:  # a pure function of (seed, step): resumes exactly
            import torch

            g = torch.Generator().manual_seed(self.run.tc.seed * 1_000_003 + step + 17)
            weights = weights[torch.randperm(len(weights), generator=g).to(weights.device)]
        batch.weights = weights.to(self.run.accelerator.device)
        self.last_weights = batch.weights
        return batch

    def objective(self, step: int, batch: StepBatch):
        from bds.training.losses import weighted_objective

        if self.probe is not None:
            self.probe.start()
        user_losses, align_losses = self.run.losses(batch.user, batch.align)
        self.user_losses = user_losses  # the loss drive reads them after the step
        loss = weighted_objective(user_losses, batch.weights, align_losses, self.alignment_weight)
        return loss, self.loss_stats(loss, batch, user_losses, align_losses)

    def after_backward(self, step: int, batch: StepBatch) -> None:
        self.rates = self._conflict_rates(len(batch.user), batch.weights) if self.probe else None

    def _conflict_rates(self, n_user: int, weights: Any) -> Any:
        """Each user row's first-order loss change from this step's alignment update."""
        run = self.run
        acc = run.accelerator
        # d objective / d l_i: w_i / B, scaled as accelerate scaled the loss it back-propagated
        factor = weights.float() / n_user / acc.gradient_accumulation_steps
        if acc.scaler is not None:
            factor = factor * float(acc.scaler.get_scale())
        return self.probe.rates(
            n_user,
            factor,
            run.optimizer,
            run.lr_scheduler.get_last_lr()[0],
            reduce=(lambda t: acc.reduce(t, reduction="mean")) if acc.num_processes > 1 else None,
        )

    def after_step(self, step: int, batch: StepBatch, stats: dict[str, float]) -> None:
        acc = self.run.accelerator
        all_index = acc.gather(batch.index.to(acc.device)).cpu()
        all_drive = self._drive(step, batch, all_index, stats)
        stats["energy"] = self.scheduler.update(
            all_index, all_drive, record_average=step >= self.average_from
        )
        all_weights = acc.gather(batch.weights).cpu()  # every rank's batch, as the update sees
        for i, w in zip(all_index.tolist(), all_weights.tolist(), strict=True):
            source = self.run.user[i].source
            self.applied_weight[source] = self.applied_weight.get(source, 0.0) + w

    def _drive(self, step: int, batch: StepBatch, all_index: Any, stats: dict[str, float]):
        """What the scheduler weighs the gathered batch by (settings.drive), on every rank."""
        acc, s = self.run.accelerator, self.settings
        if self.conflict is not None:
            all_rates = acc.gather(self.rates.to(acc.device)).cpu()
            drive = self.conflict.accumulate(all_index, all_rates, step)
            stats["conflict_rate_mean"] = float(all_rates.mean())
            return drive
        if self.evidence is not None:  # fixed before the first step, the same on every rank
            return self.evidence_drive[all_index]
        drive = self.user_losses.detach()
        if s.scheduler_losses == "updated":  # losses at the parameters after this step
            import torch

            with torch.no_grad():
                drive, _ = self.run.losses(batch.user, [])
        if s.safety_agnostic:
            ref_losses = self._reference_step(batch.user, batch.weights)
            stats["loss_reference"] = float(ref_losses.mean())
            drive = drive - ref_losses
        return acc.gather(drive.float()).cpu()

    def _reference_step(self, user: list[Any], weights: Any) -> Any:
        """Fit theta_ref (a second adapter) to the weighted user batch without D_safe.

        It runs on the unwrapped model, outside DDP, so its gradients are averaged across
        ranks here; the main adapter is untouched. Returns detached l_i(theta_ref).
        """
        run = self.run
        batch = run.device_batch(user)
        run.activate(REFERENCE_ADAPTER)
        try:
            losses = run.sample_losses(run.peft_model, batch)
            if self.settings.reference_weights == "uniform":
                losses.mean().backward()
            else:
                (losses * weights).mean().backward()
            if run.accelerator.num_processes > 1:
                for group in self.ref_optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad = run.accelerator.reduce(p.grad, reduction="mean")
            for group in self.ref_optimizer.param_groups:  # theta's schedule, step for step
                group["lr"] = run.lr_scheduler.get_last_lr()[0]
            self.ref_optimizer.step()
            self.ref_optimizer.zero_grad(set_to_none=True)
        finally:
            run.activate("default")
        return losses.detach()

    def on_step_end(self, done: int) -> None:
        if done % self.run.tc.trajectory_steps == 0 or done == self.run.total_steps:
            self.trajectory[done] = self.scheduler.all_weights().tolist()

    def log_stats(self) -> dict[str, float]:
        w = self.scheduler.all_weights()
        out = {}
        for source in ("benign", "harmful"):
            idx = [i for i, s in enumerate(self.run.user) if s.source == source]
            if idx:
                out[f"weight_{source}"] = float(w[idx].mean())
        return out

    def values_to_check(self) -> Any:
        return self.last_weights

    def close(self) -> None:
        if self.probe is not None:
            self.probe.remove()

    # ---------------------------------------------------------------- state -------------

    def state_dict(self) -> dict[str, Any]:
        import torch

        steps = sorted(self.trajectory)
        state = {
            "trajectory_steps": torch.tensor(steps, dtype=torch.long),
            "trajectory": torch.tensor([self.trajectory[s] for s in steps]),
            "scheduler": self.scheduler.state_dict(),
        }
        if self.ref_optimizer is not None:
            state["ref_optimizer"] = self.ref_optimizer.state_dict()
        if self.conflict is not None:
            state["conflict"] = self.conflict.state_dict()
            state["conflict_direction"] = self.probe.state_dict()
        sources = sorted(self.applied_weight)
        state["applied_sources"] = "\n".join(sources)
        state["applied_weight"] = torch.tensor([self.applied_weight[k] for k in sources])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ref_optimizer is not None:
            self.ref_optimizer.load_state_dict(state["ref_optimizer"])
        if self.conflict is not None:
            self.conflict.load_state_dict(state["conflict"])
            self.probe.load_state_dict(state["conflict_direction"])
        if state.get("applied_sources"):
            names = state["applied_sources"].split("\n")
            self.applied_weight = dict(zip(names, state["applied_weight"].tolist(), strict=True))
        steps = state["trajectory_steps"].tolist()
        self.trajectory = dict(zip(steps, state["trajectory"].tolist(), strict=True))

    # ---------------------------------------------------------------- outputs -----------

    def finish(self, output_dir: Path, summary: dict[str, Any]) -> None:
        from bds.training.guard import check_finite
        from bds.training.outputs import weight_summary, write_weights_table

        run = self.run
        weights = self.scheduler.reported_weights()
        check_finite(run.total_steps, {}, weights, output_dir)  # no output of NaN weights
        sources = [s.source for s in run.user]
        write_weights_table(
            output_dir / "weights.csv",
            [s.id for s in run.user],
            sources,
            weights.tolist(),
            self.scheduler.all_logits().tolist(),
            self.trajectory,
        )
        if self.settings.scheduler.kind == "neural":  # a reusable, self-contained folder
            self.scheduler.save(output_dir / "scheduler")
        summary["weights"] = weight_summary(sources, weights.tolist())
        summary["weights"]["training_weight_share"] = _shares(self.applied_weight)
        summary["drive"] = self.settings.drive
        if self.evidence is not None:
            summary["evidence"] = {
                "openings": self.evidence_openings_used,
                **_evidence_summary(self.evidence, sources),
            }


def _evidence_summary(evidence: Any, sources: list[str]) -> dict[str, Any]:
    """Mean e_i per source, and its AUROC benign vs harmful (benign lower = 1.0)."""
    from bds.stats import auroc

    values = evidence.tolist()
    by = {
        src: [v for v, s in zip(values, sources, strict=True) if s == src] for src in set(sources)
    }
    out: dict[str, Any] = {"mean": {k: round(sum(v) / len(v), 4) for k, v in sorted(by.items())}}
    if by.get("benign") and by.get("harmful"):
        # auroc(a, b): P(a > b); a benign sample should carry less evidence than a harmful one
        value = auroc([-v for v in by["benign"]], [-v for v in by["harmful"]])
        out["auroc_benign_vs_harmful"] = None if value is None else round(value, 4)
    return out


def _warm_start_logits(path: Path, user: list[Any]) -> Any:
    """The logit of each user sample (in D_ft's order) from a run's weights.csv."""
    import torch

    from bds.errors import BDSInputError
    from bds.training.outputs import read_weights_table

    table = path / "weights.csv" if path.is_dir() else path
    if not table.is_file():
        raise BDSInputError(
            f"defense.warm_start: {table} does not exist; give a BDS run's folder or its weights.csv"
        )
    rows = read_weights_table(table)
    if not rows or not {"id", "logit"} <= set(rows[0]):
        raise BDSInputError(
            f"defense.warm_start: {table} has no id and logit columns; give a BDS run's weights.csv"
        )
    logits = {r["id"]: r["logit"] for r in rows}
    missing = [s.id for s in user if s.id not in logits]
    if missing:
        raise BDSInputError(
            f"defense.warm_start: {len(missing)} of the {len(user)} user samples have no row in "
            f"{table} (first: {missing[0]}); warm-start from a run on the same data"
        )
    try:
        return torch.tensor([float(logits[s.id]) for s in user])
    except ValueError as exc:
        raise BDSInputError(
            f"defense.warm_start: {table}: a logit is not a number ({exc})"
        ) from None


def _copy_adapter(peft_model: Any, source: str, target: str) -> None:
    """Start adapter `target` from `source`'s weights. theta_ref must share theta's init:
    from its own random init, l_i - l_i(theta_ref) measures how fast each sample is learned
    from two different starts (learnability), not what the alignment batch changes."""
    import torch

    params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            if f".{target}." in name:
                p.copy_(params[name.replace(f".{target}.", f".{source}.")])


def _shares(totals: dict[str, float]) -> dict[str, float]:
    """Each source's share of the weight applied over all steps (SFT: its share of D_ft)."""
    whole = sum(totals.values())
    return {k: round(v / whole, 6) for k, v in sorted(totals.items())} if whole else {}
